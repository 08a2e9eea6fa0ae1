//! A guest from configuration to outcome.
//!
//! ```text
//! Vm::new   check the configuration → open KVM → create the VM and its in-kernel irqchip
//!           → guest RAM (memfd or file)
//!           → memory slots → kernel ELF → GDT, page tables, command line, zero page
//!           → vCPU with CPUID and long-mode registers                (host setup time)
//! Vm::run   KVM_RUN loop until the guest exits, crashes or times out  (run time)
//! ```

use crate::arch::regs::setup_vcpu;
use crate::boot::{load_kernel, write_boot_structures, BootError};
use crate::config::{check_cmdline, check_e820, check_mem_size, ConfigError, VmConfig};
use crate::memory::{default_e820, GuestRam, MemoryError};
use crate::outcome::{exit_code, Outcome};
use crate::swap::{SwapDevice, SwapError};
use crate::vcpu::{self, CheckpointStop, RunOptions};
use kvm_bindings::{kvm_userspace_memory_region, CpuId, KVM_API_VERSION, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The guest kernel, built by `build.rs`.
pub static GUEST_KERNEL: &[u8] = include_bytes!(env!("KVM_MM_GUEST_KERNEL"));
/// The `user-hello` program's ELF image, as the kernel embeds it (tests read its segments).
pub static USER_HELLO: &[u8] = include_bytes!(env!("KVM_MM_USER_HELLO"));

/// Where KVM's real-mode TSS goes (three pages in the MMIO gap, as Firecracker does).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Errors that stop a guest from running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The KVM device cannot be opened.
    #[error("{}", kvm_open_message(path, source))]
    KvmOpen {
        /// The device.
        path: PathBuf,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// The device opened but does not speak the KVM API.
    #[error("{} is not a KVM device (KVM_GET_API_VERSION gave {version}); point --kvm-device at /dev/kvm", path.display())]
    NotKvm {
        /// The device.
        path: PathBuf,
        /// What it answered.
        version: i32,
    },
    /// A KVM call failed.
    #[error("KVM {call} failed: {source}")]
    Kvm {
        /// The ioctl.
        call: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Guest memory could not be prepared for boot.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The swap device could not be set up.
    #[error(transparent)]
    Swap(#[from] SwapError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::Swap(
                SwapError::Unaligned { .. }
                | SwapError::TooSmall { .. }
                | SwapError::TooLarge { .. },
            ) => exit_code::USAGE,
            _ => exit_code::HOST,
        }
    }
}

fn kvm_open_message(path: &Path, err: &kvm_ioctls::Error) -> String {
    let default = path == Path::new(crate::config::DEFAULT_KVM_DEVICE);
    let path = path.display();
    match err.errno() {
        libc::ENOENT if default => format!("{path} does not exist: this host offers no KVM (enable virtualisation and load the kvm module)"),
        libc::ENOENT => format!("{path} does not exist; point --kvm-device at the KVM device (usually /dev/kvm)"),
        libc::EACCES | libc::EPERM => {
            format!("no permission to open {path}: add your user to the group that owns it (usually 'kvm') or run with access to it")
        }
        _ => format!("cannot open {path}: {err}"),
    }
}

fn kvm_call(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { call, source }
}

/// A guest ready to run.
pub struct Vm {
    _vm: VmFd,
    vcpu: VcpuFd,
    ram: GuestRam,
    timeout: Option<Duration>,
    echo_console: bool,
    inspect: Vec<crate::inspect::Command>,
    swap: Option<SwapDevice>,
    setup_started: Instant,
}

impl Vm {
    /// Checks `config` and builds the guest up to its first instruction.
    pub fn new(config: &VmConfig) -> Result<Self, Error> {
        let setup_started = Instant::now();
        check_mem_size(config.mem_size)?;
        check_cmdline(&config.cmdline)?;
        if let Some(swap) = &config.swap {
            crate::swap::check_swap_size(swap.size)?;
            if config.cmdline.split_whitespace().any(|option| option.starts_with("swap=")) {
                return Err(ConfigError::SwapOnCmdline.into());
            }
        }
        let ranges = crate::memory::ram_ranges(config.mem_size);
        let e820 = config.e820.clone().unwrap_or_else(|| default_e820(config.mem_size));
        let ram_pairs: Vec<(u64, u64)> = ranges.iter().map(|r| (r.guest_addr, r.size)).collect();
        check_e820(&e820, &ram_pairs)?;
        if let Some(path) = &config.mem_file {
            crate::memory::check_mem_file(path)?;
        }

        let kvm = open_kvm(&config.kvm_device)?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_call("KVM_GET_SUPPORTED_CPUID"))?;
        check_address_space(config.mem_size, &cpuid)?;
        if let Some(host) = crate::memory::host_memory().filter(|&host| config.mem_size > host) {
            return Err(ConfigError::BeyondHostMemory { size: config.mem_size, host }.into());
        }
        let vm = kvm.create_vm().map_err(kvm_call("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS).map_err(kvm_call("KVM_SET_TSS_ADDR"))?;
        // The in-kernel LAPIC (with PIC and IOAPIC): the guest's timer interrupts, which
        // preempt its processes.
        vm.create_irq_chip().map_err(kvm_call("KVM_CREATE_IRQCHIP"))?;

        let ram = GuestRam::new(config.mem_size, config.mem_file.as_deref())?;
        for (slot, region) in (0u32..).zip(ram.memory.iter()) {
            let host = ram
                .memory
                .get_host_address(region.start_addr())
                .map_err(|source| BootError::Write { what: "memory slot", source })?;
            let region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range is a live mapping owned by `ram`, which outlives the VM
            // (`Vm` holds both and drops the VM first), and slots do not overlap.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm_call("KVM_SET_USER_MEMORY_REGION"))?;
        }

        let swap = match &config.swap {
            Some(swap) => Some(SwapDevice::create(&swap.path, swap.size)?),
            None => None,
        };
        // The guest learns of the device from its command line.
        let cmdline = match &swap {
            Some(device) => {
                format!("{} swap={}", config.cmdline, device.slots()).trim().to_string()
            }
            None => config.cmdline.clone(),
        };
        check_cmdline(&cmdline)?;
        let entry = load_kernel(&ram.memory, GUEST_KERNEL)?;
        write_boot_structures(&ram.memory, &e820, &cmdline, &ranges)?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_call("KVM_CREATE_VCPU"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_call("KVM_SET_CPUID2"))?;
        setup_vcpu(&vcpu, entry).map_err(kvm_call("KVM_SET_SREGS/REGS/FPU"))?;
        Ok(Self {
            _vm: vm,
            vcpu,
            ram,
            timeout: config.timeout,
            echo_console: config.echo_console,
            inspect: config.inspect.clone(),
            swap,
            setup_started,
        })
    }

    /// Guest RAM, as the VMM maps it.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.ram.memory
    }

    /// KVM's translation (`KVM_TRANSLATE`) of guest-virtual `gva` on the vCPU's current
    /// page tables: the guest-physical address, or `None` if unmapped.
    pub fn translate_gva(&self, gva: u64) -> Result<Option<u64>, Error> {
        let t = self.vcpu.translate_gva(gva).map_err(kvm_call("KVM_TRANSLATE"))?;
        Ok((t.valid != 0).then_some(t.physical_address))
    }

    /// Runs the guest to its end.
    pub fn run(self) -> Result<Outcome, Error> {
        self.run_with(|_| {})
    }

    /// Runs the guest to its end, calling `observe` at every checkpoint from BOOTED on
    /// while the guest waits there: to inspect it (its RAM, or its RAM file from another
    /// reader) at a point where its allocators are consistent.
    pub fn run_with(
        mut self,
        mut observe: impl FnMut(&CheckpointStop<'_>),
    ) -> Result<Outcome, Error> {
        let setup_time = self.setup_started.elapsed();
        let started = Instant::now();
        let options = RunOptions {
            timeout: self.timeout,
            echo: self.echo_console,
            inspect: &self.inspect,
            swap: self.swap.as_ref(),
        };
        let record = vcpu::run(&mut self.vcpu, &self.ram.memory, &options, &mut observe)?;
        Ok(Outcome::new(record, self.ram.resident_bytes(), setup_time, started.elapsed()))
    }
}

/// Boots a guest and runs it to its end.
pub fn run(config: &VmConfig) -> Result<Outcome, Error> {
    Vm::new(config)?.run()
}

fn open_kvm(path: &Path) -> Result<Kvm, Error> {
    let open_error = |source| Error::KvmOpen { path: path.to_path_buf(), source };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| open_error(kvm_ioctls::Error::new(libc::EINVAL)))?;
    let kvm = Kvm::new_with_path(&c_path).map_err(open_error)?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION as i32 {
        return Err(Error::NotKvm { path: path.to_path_buf(), version });
    }
    Ok(kvm)
}

/// Checks that RAM fits the guest-physical address width KVM reports (CPUID 0x8000_0008).
fn check_address_space(mem_size: u64, cpuid: &CpuId) -> Result<(), Error> {
    let bits = cpuid
        .as_slice()
        .iter()
        .find(|entry| entry.function == 0x8000_0008)
        .map_or(36, |entry| (entry.eax & 0xff) as u8);
    let end = crate::memory::ram_ranges(mem_size).last().map_or(0, |r| r.guest_addr + r.size);
    if bits < 64 && end > 1u64 << bits {
        return Err(ConfigError::BeyondAddressSpace { size: mem_size, end, bits }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_open_errors_say_what_to_do() {
        let path = Path::new("/dev/kvm");
        let denied = kvm_open_message(path, &kvm_ioctls::Error::new(libc::EACCES));
        assert!(denied.starts_with("no permission to open /dev/kvm: add your user"), "{denied}");
        let missing = kvm_open_message(path, &kvm_ioctls::Error::new(libc::ENOENT));
        assert!(
            missing.starts_with("/dev/kvm does not exist: this host offers no KVM"),
            "{missing}"
        );
        let wrong =
            kvm_open_message(Path::new("/wrong/path"), &kvm_ioctls::Error::new(libc::ENOENT));
        assert_eq!(
            wrong,
            "/wrong/path does not exist; point --kvm-device at the KVM device (usually /dev/kvm)"
        );
    }

    #[test]
    fn embedded_kernel_is_an_x86_64_elf() {
        assert_eq!(&GUEST_KERNEL[..4], b"\x7fELF");
        assert_eq!(GUEST_KERNEL[4], 2, "64-bit");
        assert_eq!(u16::from_le_bytes([GUEST_KERNEL[18], GUEST_KERNEL[19]]), 62, "EM_X86_64");
    }
}
