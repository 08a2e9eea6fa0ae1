//! The kernel command line: whitespace-separated `name` or `name=value` options.
//!
//! Unlike Linux, which hands unknown options on to init, this kernel has no init: an option
//! it does not know is a mistake, and [`Options::parse`] names it.
//!
//! | option | values | default |
//! |---|---|---|
//! | `workload=` | a [`Workload`] name | `boot` |
//! | `loglevel=` | `off`, `error`, `warn`, `info`, `debug`, `trace`, or Linux's `0`–`8` | `info` |
//! | `seed=` | the random seed of `stress`, `populate`, `mmap-stress` and `syscall-fuzz`, a number | `1` |
//! | `ops=` | their operations, 1 to 1 000 000; for `thp`, the MiB it touches | `2000` (`thp`: 64) |
//! | `progress=` | a progress checkpoint every N operations of stress and populate (0: none) | `0` |
//! | `slub_debug` | red zones and poisoning in the kmalloc caches | off |
//! | `swap=` | slots of the swap device (set by `vmm run --swap`), at most 16 Mi | `0`: none |

use log::LevelFilter;
use shared::hypercall::CmdlineErrorKind;
use shared::workload::Workload;

/// The options the kernel understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// What to run after booting.
    pub workload: Workload,
    /// The most verbose console messages to print.
    pub loglevel: LevelFilter,
    /// Seed of the stress workload.
    pub seed: u64,
    /// Operations of the stress workload.
    pub ops: u32,
    /// Whether the command line gave `ops=` (workloads with another default read it).
    pub ops_given: bool,
    /// A progress checkpoint every this many operations of the stress and populate
    /// workloads, for a host to inspect the guest mid-run; 0 for none.
    pub progress: u32,
    /// Red zones and poisoning in the kmalloc caches.
    pub slub_debug: bool,
    /// Page slots of the swap device the VMM offers; 0 for none.
    pub swap: u64,
}

/// The most swap slots a device may have (64 GiB of pages; the VMM's limit too).
pub const MAX_SWAP_SLOTS: u64 = 16 << 20;

impl Default for Options {
    fn default() -> Self {
        Self {
            workload: Workload::Boot,
            loglevel: LevelFilter::Info,
            seed: 1,
            ops: 2000,
            ops_given: false,
            progress: 0,
            slub_debug: false,
            swap: 0,
        }
    }
}

/// A rejected option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdlineError<'a> {
    /// What is wrong with it.
    pub kind: CmdlineErrorKind,
    /// The option as written (`name` or `name=value`).
    pub option: &'a str,
}

impl core::fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.kind {
            CmdlineErrorKind::UnknownOption => write!(f, "unknown kernel option '{}'", self.option),
            CmdlineErrorKind::BadValue => write!(f, "bad value in kernel option '{}'", self.option),
        }
    }
}

impl Options {
    /// Parses a command line; the first rejected option ends the parse.
    pub fn parse(cmdline: &str) -> Result<Self, CmdlineError<'_>> {
        let mut options = Self::default();
        for option in cmdline.split_ascii_whitespace() {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (option, None),
            };
            let bad_value = CmdlineError { kind: CmdlineErrorKind::BadValue, option };
            match (name, value) {
                ("workload", Some(value)) => {
                    options.workload = Workload::from_name(value).ok_or(bad_value)?;
                }
                ("loglevel", Some(value)) => {
                    options.loglevel = parse_loglevel(value).ok_or(bad_value)?;
                }
                ("seed", Some(value)) => options.seed = value.parse().map_err(|_| bad_value)?,
                ("ops", Some(value)) => {
                    let ops = value.parse().ok().filter(|ops| (1..=1_000_000).contains(ops));
                    options.ops = ops.ok_or(bad_value)?;
                    options.ops_given = true;
                }
                ("swap", Some(value)) => {
                    let slots =
                        value.parse().ok().filter(|slots| (1..=MAX_SWAP_SLOTS).contains(slots));
                    options.swap = slots.ok_or(bad_value)?;
                }
                ("progress", Some(value)) => {
                    options.progress = value.parse().map_err(|_| bad_value)?;
                }
                ("slub_debug", None) => options.slub_debug = true,
                ("workload" | "loglevel" | "seed" | "ops" | "progress" | "swap", None)
                | ("slub_debug", Some(_)) => return Err(bad_value),
                _ => return Err(CmdlineError { kind: CmdlineErrorKind::UnknownOption, option }),
            }
        }
        // The misuse workload needs the debug checks it misuses.
        options.slub_debug |= options.workload == Workload::SlabMisuse;
        Ok(options)
    }
}

/// A level name, or Linux's console loglevel: messages below level `N` are printed, with
/// `KERN_ERR` = 3, `KERN_WARNING` = 4, `KERN_INFO` = 6 and `KERN_DEBUG` = 7.
fn parse_loglevel(value: &str) -> Option<LevelFilter> {
    Some(match value {
        "off" | "0" => LevelFilter::Off,
        "error" | "1" | "2" | "3" | "4" => LevelFilter::Error,
        "warn" | "5" | "6" => LevelFilter::Warn,
        "info" | "7" => LevelFilter::Info,
        "debug" | "8" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_command_line_gives_the_defaults() {
        assert_eq!(Options::parse("  "), Ok(Options::default()));
    }

    #[test]
    fn parses_known_options_in_any_order() {
        let options = Options::parse("loglevel=debug  workload=panic").expect("parses");
        assert_eq!(
            options,
            Options {
                workload: Workload::Panic,
                loglevel: LevelFilter::Debug,
                ..Options::default()
            }
        );
        assert!(Options::parse("slub_debug").is_ok_and(|o| o.slub_debug));
        assert_eq!(Options::parse("swap=256").map(|o| o.swap), Ok(256));
        assert!(Options::parse("workload=slab-misuse").is_ok_and(|o| o.slub_debug));
        let stress =
            Options::parse("workload=stress seed=42 ops=500 progress=100").expect("parses");
        assert_eq!(
            (stress.workload, stress.seed, stress.ops, stress.progress),
            (Workload::Stress, 42, 500, 100)
        );
        assert_eq!(Options::parse("loglevel=4").map(|o| o.loglevel), Ok(LevelFilter::Error));
        assert_eq!(Options::parse("loglevel=7").map(|o| o.loglevel), Ok(LevelFilter::Info));
    }

    #[test]
    fn names_the_unknown_option() {
        let err = Options::parse("loglevel=info frobnicate=3 other").expect_err("rejects");
        assert_eq!(
            err,
            CmdlineError { kind: CmdlineErrorKind::UnknownOption, option: "frobnicate=3" }
        );
        assert_eq!(std::format!("{err}"), "unknown kernel option 'frobnicate=3'");
    }

    #[test]
    fn rejects_bad_and_missing_values() {
        for line in [
            "workload=nope",
            "loglevel=loud",
            "workload",
            "loglevel=",
            "loglevel=9",
            "seed=x",
            "ops=0",
            "ops=2000000",
            "ops",
            "progress=-1",
            "progress",
            "swap=0",
            "swap=16777217",
            "swap",
        ] {
            let err = Options::parse(line).expect_err(line);
            assert_eq!((err.kind, err.option), (CmdlineErrorKind::BadValue, line));
        }
    }
}
