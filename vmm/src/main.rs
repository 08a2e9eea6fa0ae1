//! The `vmm` command: boot the kvm-mm guest under KVM.

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use shared::boot::E820Entry;
use shared::workload::Workload;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vmm::config::{parse_e820, parse_mem_size, parse_size, SwapConfig, DEFAULT_KVM_DEVICE};
use vmm::inspect::{Command, Inspector, RamReader};
use vmm::{exit_code, procfs, VmConfig};

const EXIT_CODES: &str = "\
Exit status:
  0-63  the guest's own status (0 = success, 1 = a check failed, 2 = bad kernel option,
        3 = kernel panic, 4 = unhandled CPU exception, 5 = boot failed)
  64    invalid command line or configuration
  69    the host cannot run the guest (no usable /dev/kvm, memory or file errors)
  70    the guest crashed without reporting it (triple fault, emulation failure, ...)
  124   the guest outlived --timeout";

/// Boots a no_std x86_64 guest kernel that manages its memory like Linux, under KVM.
#[derive(Debug, Parser)]
#[command(name = "vmm", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boot the guest and run a workload; the guest console goes to stdout.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Look into a guest through its RAM file (`vmm run --mem-file FILE`), while it runs or
    /// after it has exited: allocator state, page tables and a consistency check.
    #[command(after_help = INSPECT_EXIT_CODES)]
    Inspect(InspectArgs),
}

const INSPECT_EXIT_CODES: &str = "\
Exit status:
  0   the inspection ran (and check found nothing wrong)
  1   check found problems; they are listed
  64  invalid command line or argument (an address, a pfn beyond the guest)
  65  the guest's data cannot be read consistently (not published yet, torn, corrupt)
  66  the RAM file cannot be opened

A guest that is changing its allocators (vmcoreinfo's sequence counter odd or moving) is
retried for about 0.1 s; an idle or exited guest reads at once.

Examples:
  vmm run --mem-file guest.ram --workload populate
  vmm inspect guest.ram buddyinfo
  vmm inspect guest.ram pagetable --range ffff888000000000-ffff888040000000
  vmm inspect guest.ram translate ffffffff80200000 ffffc90000000000
  vmm inspect guest.ram check --json
  vmm inspect guest.ram --swap-file guest.swap read 1 7fffff7f0000 --len 64";

#[derive(Debug, Args)]
struct InspectArgs {
    /// The guest's RAM file, as given to `vmm run --mem-file`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// What to show.
    #[command(subcommand)]
    command: Command,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The guest's swap file, as given to `vmm run --swap-file` (for `read` of pages
    /// swapped out, and the name `swaps` shows).
    #[arg(long, global = true, value_name = "PATH")]
    swap_file: Option<PathBuf>,
}

/// A parsed `--e820` (a newtype, so that clap takes the list as one value).
#[derive(Clone, Debug)]
struct E820Spec(Vec<E820Entry>);

#[derive(Debug, Args)]
struct RunArgs {
    /// Guest RAM: bytes, or with a K, M, G or T suffix (a multiple of 4 KiB, at least 8M).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_mem_size)]
    mem: u64,
    /// Replace the default e820 map with comma-separated START-END:TYPE entries (hex
    /// addresses, END exclusive; TYPE ram, reserved, acpi, nvs, unusable or a number);
    /// unsorted, overlapping and adjacent entries are allowed.
    #[arg(long, value_name = "SPEC", value_parser = |spec: &str| parse_e820(spec).map(E820Spec))]
    e820: Option<E820Spec>,
    /// Extra options for the guest kernel, space-separated: loglevel=off…trace (or 0–8),
    /// slub_debug (red zones and poison in kmalloc), seed=N and ops=N (stress, populate,
    /// mmap-stress, syscall-fuzz), progress=N (a checkpoint every N operations, for
    /// --inspect).
    #[arg(long, value_name = "TEXT", default_value = "")]
    cmdline: String,
    /// The workload the guest runs after booting.
    #[arg(long, value_name = "NAME", value_parser = PossibleValuesParser::new(Workload::ALL.map(|w| clap::builder::PossibleValue::new(w.name()).help(w.describe()))))]
    workload: Option<String>,
    /// Back guest RAM with this file instead of anonymous memory, so that other processes
    /// can read it (`vmm inspect`). Created or truncated; refused while another `vmm run`
    /// uses it.
    #[arg(long, value_name = "PATH")]
    mem_file: Option<PathBuf>,
    /// Give the guest a swap device whose page slots live in this file (created or
    /// truncated, and locked while the guest runs); needs --swap.
    #[arg(long, value_name = "PATH", requires = "swap")]
    swap_file: Option<PathBuf>,
    /// The swap device's size: whole pages, 1M to 64G, with a K, M or G suffix; needs
    /// --swap-file.
    #[arg(long, value_name = "SIZE", requires = "swap_file", value_parser = parse_swap_size)]
    swap: Option<u64>,
    /// Stop the guest after this many seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,
    /// Print one JSON object at the end (exit, reports, console) instead of streaming the
    /// guest console.
    #[arg(long)]
    json: bool,
    /// The KVM device.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_KVM_DEVICE)]
    kvm_device: PathBuf,
    /// Host inspections to print at every guest checkpoint and at exit, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = PossibleValuesParser::new(Command::NAMES))]
    inspect: Vec<String>,
}

impl RunArgs {
    fn config(self) -> Result<VmConfig, String> {
        if !self.timeout.is_finite() || self.timeout < 0.0 {
            return Err(format!("--timeout {} is not a number of seconds", self.timeout));
        }
        let cmdline = match &self.workload {
            Some(workload) => format!("{} workload={workload}", self.cmdline).trim().to_string(),
            None => self.cmdline,
        };
        Ok(VmConfig {
            mem_size: self.mem,
            e820: self.e820.map(|spec| spec.0),
            cmdline,
            mem_file: self.mem_file,
            timeout: (self.timeout > 0.0).then(|| Duration::from_secs_f64(self.timeout)),
            echo_console: !self.json,
            kvm_device: self.kvm_device,
            inspect: self.inspect.iter().filter_map(|name| Command::named(name)).collect(),
            swap: self.swap_file.zip(self.swap).map(|(path, size)| SwapConfig { path, size }),
        })
    }
}

/// `--swap`: a size, within the swap device's bounds.
fn parse_swap_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text).map_err(|err| err.to_string())?;
    vmm::swap::check_swap_size(size).map_err(|err| err.to_string())?;
    Ok(size)
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away
    // (`vmm inspect FILE pagetable --tlb | head`) instead of panicking on EPIPE.
    // SAFETY: restores the default disposition of SIGPIPE before any thread starts; no
    // handler of ours is replaced.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|out, record| match record.level() {
            log::Level::Info => writeln!(out, "vmm: {}", record.args()),
            level => writeln!(out, "vmm: {}: {}", level.as_str().to_lowercase(), record.args()),
        })
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap says "error: …"; every error of ours says "vmm: error: …".
            eprintln!("vmm: {}", one_line(&err.render().to_string()));
            return ExitCode::from(exit_code::USAGE);
        }
    };
    match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Inspect(args) => inspect(args),
    }
}

/// What the guest reported, as the host decoded it: the allocator state in `/proc`
/// formats, boot-phase costs and self-test results.
fn print_reports(outcome: &vmm::Outcome) {
    let zones = outcome.zones();
    if !zones.is_empty() {
        println!(
            "/proc/buddyinfo:\n{}/proc/zoneinfo:\n{}",
            procfs::buddyinfo(&zones),
            procfs::zoneinfo(&zones)
        );
    }
    let slabs = outcome.slabs();
    if !slabs.is_empty() {
        println!("/proc/slabinfo:\n{}", procfs::slabinfo(&slabs));
    }
    for report in &outcome.reports {
        if let vmm::Report::BootTimes(t) = report {
            // Guest figures: summed wide, so no report can overflow them.
            let total = [t.memblock_cycles, t.memmap_cycles, t.buddy_cycles].map(u128::from);
            let per_gib = total.iter().sum::<u128>() * (1 << 30) / u128::from(t.ram_bytes.max(1));
            log::debug!(
                "memory setup: memblock {}, memmap {}, buddy {} TSC cycles ({per_gib} per GiB of RAM)",
                t.memblock_cycles,
                t.memmap_cycles,
                t.buddy_cycles
            );
        }
        if let vmm::Report::PageTables(t) = report {
            let ([pml4, pdpt, pd, pt], [small, large, huge]) = (t.tables, t.pages);
            log::debug!(
                "guest page tables: {pml4} PML4, {pdpt} PDPT, {pd} PD, {pt} PT; mapped {small} × 4 KiB, {large} × 2 MiB, {huge} × 1 GiB"
            );
        }
    }
    let tests = outcome.tests();
    if !tests.is_empty() {
        let failed = tests.iter().filter(|(_, passed, _)| !passed).count();
        log::info!("guest checks: {} passed, {failed} failed", tests.len() - failed);
    }
}

fn inspect(args: InspectArgs) -> ExitCode {
    let swap_file = args.swap_file.as_deref().map(vmm::inspect::swap::SwapFile::open).transpose();
    let result = swap_file.and_then(|swap_file| {
        let mut inspector = Inspector::new(RamReader::open_file(&args.file)?);
        inspector.swap_file = swap_file;
        inspector.run(&args.command)
    });
    let output = match result {
        Ok(output) => output,
        Err(err) => {
            log::error!("{err}");
            return ExitCode::from(err.exit_code());
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&output) {
            Ok(text) => println!("{text}"),
            Err(err) => log::error!("cannot encode the result as JSON: {err}"),
        }
    } else {
        print!("{}", output.text());
    }
    if output.found_problems() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A clap error on one line, without its usage and "try --help" trailers.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("For more information")
                && !line.starts_with("Usage:")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(args: RunArgs) -> ExitCode {
    let json = args.json;
    let config = match args.config() {
        Ok(config) => config,
        Err(message) => {
            log::error!("{message}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let outcome = match vmm::run(&config) {
        Ok(outcome) => outcome,
        Err(err) => {
            log::error!("{err}");
            return ExitCode::from(err.exit_code());
        }
    };
    if json {
        match serde_json::to_string_pretty(&outcome) {
            Ok(text) => println!("{text}"),
            Err(err) => log::error!("cannot encode the outcome as JSON: {err}"),
        }
    } else {
        print_reports(&outcome);
    }
    if outcome.exit_code == 0 {
        log::info!("{}", outcome.summary());
    } else {
        log::error!("{}", outcome.summary());
    }
    ExitCode::from(outcome.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["vmm", "run"].iter().chain(args))?;
        match cli.command {
            Cmd::Run(run) => Ok(run),
            Cmd::Inspect(_) => unreachable!("parsed as run"),
        }
    }

    #[test]
    fn defaults_boot_256m_with_a_timeout() {
        let config = parse(&[]).expect("parses").config().expect("valid");
        assert_eq!(config.mem_size, 256 << 20);
        assert_eq!(config.e820, None);
        assert_eq!(config.timeout, Some(Duration::from_secs(60)));
        assert!(config.echo_console);
    }

    #[test]
    fn options_reach_the_config() {
        let args = [
            "--mem",
            "6G",
            "--e820",
            "0-9fc00:ram,100000-1000000:ram",
            "--cmdline",
            "loglevel=debug",
            "--workload",
            "panic",
            "--mem-file",
            "/tmp/ram",
            "--timeout",
            "0",
            "--json",
        ];
        let config = parse(&args).expect("parses").config().expect("valid");
        assert_eq!(config.mem_size, 6 << 30);
        assert_eq!(config.e820.as_ref().map(Vec::len), Some(2));
        assert_eq!(config.cmdline, "loglevel=debug workload=panic");
        assert_eq!(config.mem_file, Some(PathBuf::from("/tmp/ram")));
        assert_eq!(config.timeout, None);
        assert!(!config.echo_console);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--mem", "lots"][..],
            &["--e820", "0-0:ram"],
            &["--e820", "0-1000:flash"],
            &["--workload", "nope"],
            &["--timeout", "soon"],
            &["--frobnicate"],
        ] {
            let err = parse(args).expect_err("rejected");
            assert!(err.use_stderr(), "{args:?}");
        }
        assert!(parse(&["--timeout=-1"]).expect("parses").config().is_err());
    }

    #[test]
    fn help_lists_workloads_and_exit_codes() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let help =
            command.find_subcommand_mut("run").expect("run exists").render_long_help().to_string();
        for workload in Workload::ALL {
            assert!(help.contains(workload.name()), "{}", workload.name());
        }
        assert!(help.contains("124   the guest outlived --timeout"));
    }
}
