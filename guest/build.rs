//! Links the kernel binary at its higher-half address when building for the bare-metal
//! target; host builds of the lib need nothing.

fn main() {
    println!("cargo:rerun-if-changed=kernel.ld");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-T{dir}/kernel.ld");
        // The target defaults to a static PIE; a kernel loaded at its link address wants a
        // plain executable without dynamic relocations.
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
