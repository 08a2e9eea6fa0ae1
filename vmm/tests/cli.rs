//! The `vmm` command as a user meets it: exit codes, one-line errors without backtraces,
//! `--help`, and `--json` output that parses.
//!
//! Tests that boot a guest say so first ([`needs_kvm`]): on a machine without a usable
//! `/dev/kvm` they fail with one sentence saying that, not with a puzzling exit code.

mod support;

use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the vmm binary runs")
}

/// Fails the test in one sentence unless this machine can run guests.
fn needs_kvm() {
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!(
            "this test boots a guest and needs a usable /dev/kvm, which this machine lacks: {err}"
        );
    }
}

/// `vmm args…` for a command that boots a guest.
fn vmm_booting(args: &[&str]) -> Output {
    needs_kvm();
    vmm(args)
}

/// Asserts a failed run: the exit code, and one stderr line, `vmm: error: …`, containing
/// `needle`.
fn assert_refused(args: &[&str], code: i32, needle: &str) {
    let out = vmm(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{args:?}: {stderr}");
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?} printed more than one line:\n{stderr}");
    assert!(lines[0].starts_with("vmm: error: "), "{args:?}: one prefix for every error: {stderr}");
}

/// [`assert_refused`] for a command that boots a guest before it fails.
fn assert_refused_booting(args: &[&str], code: i32, needle: &str) {
    needs_kvm();
    assert_refused(args, code, needle);
}

#[test]
fn bad_memory_sizes_exit_64_with_one_line() {
    assert_refused(&["run", "--mem", "0"], 64, "--mem 0 gives the guest no memory");
    assert_refused(&["run", "--mem", "100"], 64, "--mem 100 is not a multiple of 4 KiB; give a size with a K, M or G suffix, like 256M (at least 8M)");
    assert_refused(&["run", "--mem", "4M"], 64, "--mem 4M is below the 8 MiB the guest needs");
    assert_refused(&["run", "--mem", "1P"], 64, "invalid size '1P'");
    assert_refused_booting(&["run", "--mem", "1024T"], 64, "address space KVM offers");
    assert_refused_booting(&["run", "--mem", "10T"], 64, "more than this host's");
}

#[test]
fn bad_e820_specs_exit_64_with_one_line() {
    assert_refused(&["run", "--e820", "0-9fc00"], 64, "invalid --e820 entry '0-9fc00'");
    assert_refused(&["run", "--e820", "0-9fc00:flash"], 64, "invalid --e820 type 'flash'");
    assert_refused(&["run", "--e820", "9fc00-0:ram"], 64, "is empty or negative");
    let many: Vec<String> =
        (0..129).map(|i| format!("{:x}-{:x}:ram", i * 0x1000, (i + 1) * 0x1000)).collect();
    assert_refused(&["run", "--e820", &many.join(",")], 64, "129 entries");
    assert_refused(
        &["run", "--mem", "64M", "--e820", "100000-8000000:ram"],
        64,
        "not backed by guest memory",
    );
    // clap's own errors carry the same prefix as ours.
    assert_refused(&["run", "--frobnicate"], 64, "unexpected argument '--frobnicate'");
}

#[test]
fn host_problems_exit_69_with_one_line() {
    assert_refused(
        &["run", "--kvm-device", "/nonexistent/kvm"],
        69,
        "/nonexistent/kvm does not exist; point --kvm-device at the KVM device (usually /dev/kvm)",
    );
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8");
    assert_refused(
        &["run", "--mem-file", dir],
        69,
        "is a directory; give the path of a file to create in it",
    );
    assert_refused_booting(
        &["run", "--mem-file", "/nonexistent-dir/ram"],
        69,
        "cannot create --mem-file",
    );
    assert_refused_booting(
        &["run", "--mem-file", "/dev/null"],
        69,
        "cannot size --mem-file /dev/null",
    );
}

#[test]
fn guest_failures_keep_their_codes() {
    assert_refused_booting(
        &["run", "--mem", "64M", "--cmdline", "frobnicate"],
        2,
        "unknown-option: 'frobnicate'",
    );
    assert_refused_booting(
        &["run", "--mem", "64M", "--workload", "triple-fault"],
        70,
        "KVM_EXIT_SHUTDOWN",
    );
    assert_refused_booting(
        &["run", "--mem", "64M", "--workload", "hang", "--timeout", "0.3"],
        124,
        "timeout",
    );
    assert_refused(&["run", "--workload", "nope"], 64, "invalid value 'nope'");
}

#[test]
fn default_run_prints_the_e820_map_and_exits_zero() {
    let out = vmm_booting(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"),
        "{stdout}"
    );
}

#[test]
fn json_output_is_one_object_with_exit_and_reports() {
    let out = vmm_booting(&["run", "--mem", "64M", "--workload", "panic", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let value: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(value["exit"]["reason"], "guest-exit");
    assert_eq!(value["exit"]["status"], 3);
    assert_eq!(value["exit_code"], 3);
    let reports = value["reports"].as_array().expect("reports");
    assert_eq!(reports[0]["report"], "e820");
    let panic = reports.iter().find(|r| r["report"] == "panic").expect("a panic report");
    assert_eq!(panic["message"], "panic requested by workload=panic");
    assert!(reports.iter().any(|r| r["report"] == "zone" && r["zone"] == "DMA"), "zone reports");
    assert!(value["console"].as_str().is_some_and(|c| c.contains("Kernel panic")));
    // Summaries, not dumps: a panic run once printed 489 KB.
    assert!(out.stdout.len() < 16 * 1024, "--json printed {} bytes", out.stdout.len());
}

#[test]
fn help_explains_options_workloads_and_exit_codes() {
    let out = vmm(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--mem <SIZE>",
        "--e820 <SPEC>",
        "--mem-file <PATH>",
        "--timeout <SECS>",
        "--json",
        "triple-fault",
        "124",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}

#[test]
fn inspect_refuses_what_it_cannot_read_with_one_line() {
    let dir = std::env::temp_dir().join(format!("kvm-mm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let missing = dir.join("missing");
    let missing = missing.to_str().expect("utf-8");
    assert_refused(&["inspect", missing, "check"], 66, "cannot open the RAM file");
    let small = dir.join("small");
    std::fs::write(&small, [0u8; 100]).expect("written");
    let small = small.to_str().expect("utf-8");
    assert_refused(&["inspect", small, "buddyinfo"], 65, "is not a kvm-mm RAM file");
    let zeros = dir.join("zeros");
    std::fs::File::create(&zeros).and_then(|f| f.set_len(1 << 20)).expect("sized");
    let zeros = zeros.to_str().expect("utf-8");
    assert_refused(&["inspect", zeros, "zoneinfo"], 65, "lists 0 RAM ranges");
    assert_refused(&["inspect", zeros, "pagetable", "--range", "2000-1000"], 64, "--range");
    assert_refused(&["inspect", zeros, "translate", "xyz"], 64, "\"xyz\" is not a hexadecimal");
    assert_refused(&["inspect", zeros, "frobnicate"], 64, "frobnicate");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_reads_a_ram_file_in_text_and_json() {
    // A guest's RAM built on the host by the guest's own allocators: no KVM needed.
    let image = support::image::Image::sound();
    let file = image.file();
    let ram = file.path.to_str().expect("utf-8");
    let text = vmm(&["inspect", ram, "buddyinfo"]);
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("Node 0, zone      DMA "), "{text}");
    let check = vmm(&["inspect", ram, "check", "--json"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    let value: serde_json::Value = serde_json::from_slice(&check.stdout).expect("one JSON object");
    assert_eq!(value["check"]["findings"].as_array().map(Vec::len), Some(0));
    let text_start = shared::layout::KERNEL_VIRT_BASE + image.kernel.start;
    let range = format!("{text_start:x}-{:x}", text_start + 0x2000);
    let tlb = vmm(&["inspect", ram, "pagetable", "--tlb", "--range", &range]);
    let tlb = String::from_utf8_lossy(&tlb.stdout);
    let first = format!("{text_start:016x}: {:016x} -G", image.kernel.start);
    assert!(tlb.starts_with(&first), "{tlb}");
    let walk = vmm(&["inspect", ram, "translate", &format!("{text_start:#x}"), "0"]);
    let walk = String::from_utf8_lossy(&walk.stdout);
    let physical = format!("= guest-physical {:#x} (4 KiB page)", image.kernel.start);
    assert!(walk.contains(&physical), "{walk}");
    assert!(walk.contains("not mapped: PML4 entry not present"), "{walk}");
}

#[test]
fn run_prints_host_derived_state_at_checkpoints_and_exit() {
    let out = vmm_booting(&["run", "--mem", "64M", "--inspect", "buddyinfo,check"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("vmm: inspect check at checkpoint 2 (booted):"), "{stdout}");
    assert!(stdout.contains("vmm: inspect buddyinfo at exit:"), "{stdout}");
    assert!(stdout.contains("OK: every RAM page has exactly one owner"), "{stdout}");
    assert_refused(&["run", "--inspect", "everything"], 64, "everything");
}

/// Two `vmm run --mem-file` on one path: the second is refused, with one line saying
/// why, instead of truncating the file under the first (whose guest would then fault on
/// its own RAM); the first's RAM stays whole, and `vmm inspect` reads it meanwhile.
#[test]
fn a_second_run_on_a_ram_file_in_use_is_refused_and_the_first_goes_on() {
    use std::io::{BufRead, BufReader};
    needs_kvm();
    let dir = std::env::temp_dir().join(format!("kvm-mm-cli-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let ram = dir.join("ram");
    let ram = ram.to_str().expect("utf-8");
    /// The first guest, stopped however the test ends.
    struct Guest(std::process::Child);
    impl Drop for Guest {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut first = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "64M", "--mem-file", ram, "--workload", "hang"])
        .args(["--timeout", "60", "--inspect", "buddyinfo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Guest)
        .expect("the first guest starts");
    // The inspection at BOOTED: the RAM is locked and vmcoreinfo published.
    // Kept open to the end: a closed pipe would end the first guest with SIGPIPE.
    let mut stdout = BufReader::new(first.0.stdout.take().expect("piped")).lines();
    let booted = stdout
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.starts_with("vmm: inspect buddyinfo at checkpoint"));
    assert!(booted, "the first guest never reached its BOOTED checkpoint");
    assert_refused(
        &["run", "--mem", "32M", "--mem-file", ram],
        69,
        "is in use by another vmm process (it holds a lock on the file); give another path, or wait for that guest to exit",
    );
    assert_eq!(std::fs::metadata(ram).map(|m| m.len()).ok(), Some(64 << 20), "not truncated");
    let buddyinfo = vmm(&["inspect", ram, "buddyinfo"]);
    assert_eq!(buddyinfo.status.code(), Some(0), "{}", String::from_utf8_lossy(&buddyinfo.stderr));
    assert!(first.0.try_wait().expect("waitable").is_none(), "the first guest still runs");
    drop(first);
    drop(stdout);
    let _ = std::fs::remove_dir_all(&dir);
}
