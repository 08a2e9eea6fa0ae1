//! The `buddy` benchmark's mixed workload in a plain loop, for profilers that count rather
//! than time (cachegrind, callgrind, perf on a machine with a PMU):
//!
//! ```text
//! cargo build --release -p guest --example buddy_mix
//! valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes \
//!     target/release/examples/buddy_mix ours 0-5 600
//! ```
//!
//! Arguments: the allocator (`ours`, `frame-allocator`, `heap` or `loop`, the loop with
//! no allocator), the orders (`0-5`, `0-3` or `4-5`) and how many times to run the 4096
//! operations. It prints the mean time per operation. Two runs with different counts give
//! steady-state counts per operation: (counts at 600 − counts at 100) / (500 × 4096).

#[path = "../benches/support/mix.rs"]
mod mix;

use mix::{byte_heap, frame_allocator, ours, workload, Blocks, Counter, Mix, OPS};
use std::ops::Range;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: buddy_mix ours|frame-allocator|heap|loop 0-5|0-3|4-5 RUNS";

/// Runs `ops` `runs` times on `allocator`; returns nanoseconds per operation.
fn time<A: Blocks>(allocator: A, ops: &[(usize, u32)], runs: u32) -> f64 {
    let mut mix = Mix::new(allocator);
    let start = Instant::now();
    for _ in 0..runs {
        mix.run(ops);
    }
    start.elapsed().as_secs_f64() * 1e9 / (f64::from(runs) * OPS as f64)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [allocator, orders, runs] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let orders: Range<u32> = match orders.as_str() {
        "0-5" => 0..6,
        "0-3" => 0..4,
        "4-5" => 4..6,
        _ => {
            eprintln!("unknown orders '{orders}'\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Ok(runs) = runs.parse::<u32>() else {
        eprintln!("RUNS must be a whole number, not '{runs}'\n{USAGE}");
        return ExitCode::from(2);
    };
    let ops = workload(orders);
    let ns = match allocator.as_str() {
        "ours" => time(ours(), &ops, runs),
        "frame-allocator" => time(frame_allocator(), &ops, runs),
        "heap" => time(byte_heap(), &ops, runs),
        "loop" => time(Counter::default(), &ops, runs),
        _ => {
            eprintln!("unknown allocator '{allocator}'\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!("{allocator}, orders {}: {ns:.2} ns per operation", args[1]);
    ExitCode::SUCCESS
}
