//! The README's examples, run: every `console` block's commands are executed and their
//! output compared (trycmd; `...` and `[..]` elide), so that the documented commands,
//! outputs and `--help` text cannot drift from the binary.

use std::path::Path;

#[test]
fn readme_examples_print_what_the_readme_says() {
    // They boot guests.
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("the README examples boot guests and need a usable /dev/kvm, which this machine lacks: {err}");
    }
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    // They create `guest.ram` in the current directory: give them one of their own (this
    // file holds one test, so nothing else depends on the process's directory).
    let dir = std::env::temp_dir().join(format!("kvm-mm-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::env::set_current_dir(&dir).expect("entered the temporary directory");
    let cases = trycmd::TestCases::new();
    cases.register_bin("vmm", Path::new(env!("CARGO_BIN_EXE_vmm"))).case(readme);
    cases.run();
    drop(cases);
    let _ = std::fs::remove_dir_all(&dir);
}
