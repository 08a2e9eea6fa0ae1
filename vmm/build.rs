//! Builds the guest kernel for `x86_64-unknown-none` and hands its ELF to the VMM, which
//! embeds it, so that `cargo run` and `cargo test` at the root need no other step.
//!
//! The guest is always built optimised (on an emulating KVM every guest instruction
//! counts), in its own target directory next to the host's, by a nested `cargo build`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    for watched in ["guest", "shared", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    ensure_target_installed(Path::new(&rustc));

    let target_dir = guest_target_dir(&out_dir);
    let release_dir = target_dir.join(TARGET).join("release");
    // The user programs first: the kernel embeds their ELFs.
    cargo_build(&cargo, &root, &target_dir, &release_dir, USER_PROGRAMS, "the user programs");
    cargo_build(&cargo, &root, &target_dir, &release_dir, &["kernel"], "the guest kernel");

    let elf = release_dir.join("kernel");
    let embedded = out_dir.join("guest-kernel.elf");
    if let Err(err) = std::fs::copy(&elf, &embedded) {
        fail(&format!("cannot copy the guest kernel {}: {err}", elf.display()));
    }
    println!("cargo:rustc-env=KVM_MM_GUEST_KERNEL={}", embedded.display());
    let user = release_dir.join("user-hello");
    let embedded = out_dir.join("user-hello.elf");
    if let Err(err) = std::fs::copy(&user, &embedded) {
        fail(&format!("cannot copy the user program {}: {err}", user.display()));
    }
    println!("cargo:rustc-env=KVM_MM_USER_HELLO={}", embedded.display());
}

include!("../guest/user_programs.rs");

/// `cargo build --release` of `bins` of the guest crate for the bare-metal target.
fn cargo_build(
    cargo: &std::ffi::OsStr,
    root: &Path,
    target_dir: &Path,
    release_dir: &Path,
    bins: &[&str],
    what: &str,
) {
    let mut build = Command::new(cargo);
    build
        .current_dir(root)
        .args(["build", "--release", "--locked", "-p", "guest"])
        .args(["--features", "kernel", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        .env("KVM_MM_USER_DIR", release_dir);
    for bin in bins {
        build.args(["--bin", bin]);
    }
    // The outer build's flags and wrappers are for the host, not for the guest.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CLIPPY_ARGS",
    ] {
        build.env_remove(var);
    }
    match build.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("building {what} failed ({status}); the errors are above")),
        Err(err) => fail(&format!("cannot run {}: {err}", Path::new(cargo).display())),
    }
}

/// Installs the bare-metal target with rustup when the toolchain lacks it.
fn ensure_target_installed(rustc: &Path) {
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output();
    let installed = sysroot.ok().filter(|out| out.status.success()).is_some_and(|out| {
        let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Path::new(&sysroot).join("lib/rustlib").join(TARGET).exists()
    });
    if installed {
        return;
    }
    let added = Command::new("rustup").args(["target", "add", TARGET]).status();
    if !added.is_ok_and(|status| status.success()) {
        fail(&format!(
            "the guest kernel needs the {TARGET} target and installing it failed: run `rustup target add {TARGET}`"
        ));
    }
}

/// `<target>/guest` beside the host's profile directories, shared by every profile and by
/// `cargo clippy`, so the guest is built once; `OUT_DIR` when the layout is not the usual.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is <target>[/<triple>]/<profile>/build/vmm-<hash>/out.
    let build = out_dir.ancestors().nth(2);
    match (build, out_dir.ancestors().nth(4)) {
        (Some(build), Some(target)) if build.file_name().is_some_and(|n| n == "build") => {
            target.join("guest")
        }
        _ => out_dir.join("guest"),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
