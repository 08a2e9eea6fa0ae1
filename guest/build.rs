//! Links the kernel at its higher-half address and the user programs at 4 MiB when building
//! for the bare-metal target, and tells the kernel where the user programs' ELFs are; host
//! builds of the lib need nothing.
//!
//! `vmm/build.rs` builds the user programs first, then the kernel, with
//! `KVM_MM_USER_DIR` naming the directory of the user programs' ELFs. Without it (the
//! kernel built on its own, as the lint step does) the kernel embeds empty images.

include!("user_programs.rs");

fn main() {
    println!("cargo:rerun-if-changed=kernel.ld");
    println!("cargo:rerun-if-changed=user.ld");
    println!("cargo:rerun-if-env-changed=KVM_MM_USER_DIR");
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-none") {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rustc-link-arg-bin=kernel=-T{dir}/kernel.ld");
    for program in USER_PROGRAMS {
        println!("cargo:rustc-link-arg-bin={program}=-T{dir}/user.ld");
        // The kernel embeds user programs whole: without symbols and debug info they are a
        // few pages instead of hundreds of KiB of the kernel image.
        println!("cargo:rustc-link-arg-bin={program}=--strip-all");
    }
    // The target defaults to a static PIE; programs loaded at their link address want plain
    // executables without dynamic relocations.
    println!("cargo:rustc-link-arg-bins=--no-pie");
    match std::env::var("KVM_MM_USER_DIR") {
        Ok(user_dir) => println!("cargo:rustc-env=KVM_MM_USER_DIR={user_dir}"),
        Err(_) => {
            // Building the kernel on its own (`cargo clippy` of the guest, say): it embeds
            // empty images, which it refuses to run ("bad ELF image: truncated").
            let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
            for program in USER_PROGRAMS {
                let _ = std::fs::write(format!("{out_dir}/{program}"), []);
            }
            println!(
                "cargo:warning=KVM_MM_USER_DIR is not set: this kernel embeds no user programs; \
                 build through the vmm crate (`cargo build` at the root) for a complete guest"
            );
            println!("cargo:rustc-env=KVM_MM_USER_DIR={out_dir}");
        }
    }
}
