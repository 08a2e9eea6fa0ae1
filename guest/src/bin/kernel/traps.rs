//! CPU exceptions and the APIC's interrupts: an IDT with the 32 exception vectors and the
//! timer's and spurious vectors, entry stubs that save the general registers into a
//! [`TrapFrame`], and a handler that passes user mode's traps on and reports what else
//! happened and ends the run.
//!
//! Stack on entry to [`exception_handler`] (lowest address first), which is the layout of
//! [`TrapFrame`]:
//!
//! ```text
//! rax rbx rcx rdx rsi rdi rbp r8 … r15   saved by exception_common
//! vector error_code                      pushed by the stub (error code 0 if the CPU has none)
//! rip cs rflags rsp ss                   pushed by the CPU
//! ```

use crate::hypercall;
use log::error;
use shared::hypercall::{
    exception_name, ExceptionReport, OopsCause, OopsReport, ReportKind, GPR_NAMES,
};
use shared::layout::{VMALLOC_END, VMALLOC_START};
use shared::status::GuestStatus;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// Registers at the exception, as the entry stubs leave them on the stack.
#[repr(C)]
pub struct TrapFrame {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, r8 … r15.
    pub gprs: [u64; 15],
    /// The vector (or `process::entry::SYSCALL_VECTOR`).
    pub vector: u64,
    /// The CPU's error code, or 0.
    pub error_code: u64,
    /// Where execution resumes.
    pub rip: u64,
    /// Code segment of the interrupted code (RPL 3: user mode).
    pub cs: u64,
    /// Flags of the interrupted code.
    pub rflags: u64,
    /// Stack of the interrupted code.
    pub rsp: u64,
    /// Stack segment of the interrupted code.
    pub ss: u64,
}

/// Where the entry stubs saved each register in [`TrapFrame::gprs`].
impl TrapFrame {
    pub const RAX: usize = 0;
    pub const RDX: usize = 3;
    pub const RSI: usize = 4;
    pub const RDI: usize = 5;
    pub const R8: usize = 7;
    pub const R9: usize = 8;
    pub const R10: usize = 9;
}

// Vectors 8, 10–14, 17, 21, 29 and 30 push an error code; the others get a zero.
core::arch::global_asm!(
    ".macro isr_noerr vec",
    "isr_\\vec:",
    "    push 0",
    "    push \\vec",
    "    jmp exception_common",
    ".endm",
    ".macro isr_err vec",
    "isr_\\vec:",
    "    push \\vec",
    "    jmp exception_common",
    ".endm",
    ".section .text",
    "isr_noerr 0", "isr_noerr 1", "isr_noerr 2", "isr_noerr 3",
    "isr_noerr 4", "isr_noerr 5", "isr_noerr 6", "isr_noerr 7",
    "isr_err 8", "isr_noerr 9", "isr_err 10", "isr_err 11",
    "isr_err 12", "isr_err 13", "isr_err 14", "isr_noerr 15",
    "isr_noerr 16", "isr_err 17", "isr_noerr 18", "isr_noerr 19",
    "isr_noerr 20", "isr_err 21", "isr_noerr 22", "isr_noerr 23",
    "isr_noerr 24", "isr_noerr 25", "isr_noerr 26", "isr_noerr 27",
    "isr_noerr 28", "isr_err 29", "isr_err 30", "isr_noerr 31",
    "isr_noerr {timer}", "isr_noerr {spurious}",
    ".global exception_common",
    "exception_common:",
    "    push r15", "push r14", "push r13", "push r12", "push r11", "push r10", "push r9", "push r8",
    "    push rbp", "push rdi", "push rsi", "push rdx", "push rcx", "push rbx", "push rax",
    // User code may have set RFLAGS.AC; with SMAP on, the kernel runs with it clear (the
    // `iretq` restores the user's flags).
    "    test byte ptr [rip + {smap}], 1",
    "    jz 2f",
    // `clac`, as `pushf`/`popf`: some emulating KVMs cannot run `clac`.
    "    pushfq",
    "    and qword ptr [rsp], ~(1 << 18)",
    "    popfq",
    "2:",
    // 22 quadwords on a 16-byte aligned stack keep it aligned for the call.
    "    mov rdi, rsp",
    "    cld",
    "    call {handler}",
    "    pop rax", "pop rbx", "pop rcx", "pop rdx", "pop rsi", "pop rdi", "pop rbp",
    "    pop r8", "pop r9", "pop r10", "pop r11", "pop r12", "pop r13", "pop r14", "pop r15",
    "    add rsp, 16",
    "    iretq",
    ".section .rodata",
    ".balign 8",
    "isr_table:",
    ".quad isr_0, isr_1, isr_2, isr_3, isr_4, isr_5, isr_6, isr_7",
    ".quad isr_8, isr_9, isr_10, isr_11, isr_12, isr_13, isr_14, isr_15",
    ".quad isr_16, isr_17, isr_18, isr_19, isr_20, isr_21, isr_22, isr_23",
    ".quad isr_24, isr_25, isr_26, isr_27, isr_28, isr_29, isr_30, isr_31",
    "isr_apic_table:",
    ".quad isr_{timer}, isr_{spurious}",
    ".section .text",
    handler = sym exception_handler,
    smap = sym crate::process::entry::SMAP_ENABLED,
    timer = const crate::apic::TIMER_VECTOR,
    spurious = const crate::apic::SPURIOUS_VECTOR,
);

extern "C" {
    static isr_table: [u64; 32];
    static isr_apic_table: [u64; 2];
}

/// An interrupt-gate descriptor (Intel SDM vol. 3, 6.14.1).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    flags: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

/// Present, DPL 0, 64-bit interrupt gate.
const GATE_INTERRUPT: u8 = 0x8e;

impl Gate {
    /// A not-present gate: a vector nothing should raise gives #NP, naming it.
    const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        flags: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    #[expect(
        clippy::cast_possible_truncation,
        reason = "a gate splits the handler address in 16/16/32-bit fields"
    )]
    const fn new(handler: u64, selector: u16, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist,
            flags: GATE_INTERRUPT,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// Every vector: the exceptions', the APIC's, and not-present gates between them.
#[repr(C, align(16))]
struct Idt([Gate; 256]);

/// The IDT's limit (its size minus one).
const IDT_LIMIT: u16 = 256 * 16 - 1;
const _: () = assert!(IDT_LIMIT as usize == core::mem::size_of::<Idt>() - 1);

static mut IDT: Idt = Idt([Gate::MISSING; 256]);

/// Double faults run on their own stack (IST), so a kernel stack overflow is reported.
const DOUBLE_FAULT: usize = 8;

/// Installs the IDT.
pub fn init() {
    use x86_64::instructions::segmentation::{Segment, CS};
    let selector = CS::get_reg().0;
    // SAFETY: single CPU, interrupts off, called once before any exception can be handled:
    // nothing else accesses IDT or reads the (immutable) stub tables concurrently.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (vector, (gate, &handler)) in idt.0.iter_mut().zip(isr_table.iter()).enumerate() {
            let ist = if vector == DOUBLE_FAULT { crate::cpu::DOUBLE_FAULT_IST } else { 0 };
            *gate = Gate::new(handler, selector, ist);
        }
        let apic = [crate::apic::TIMER_VECTOR, crate::apic::SPURIOUS_VECTOR];
        for (vector, &handler) in apic.into_iter().zip(isr_apic_table.iter()) {
            idt.0[usize::from(vector)] = Gate::new(handler, selector, 0);
        }
        lidt(&DescriptorTablePointer { limit: IDT_LIMIT, base: VirtAddr::from_ptr(idt) });
    }
}

/// Loads an empty IDT, so that the next exception escalates to a triple fault.
pub fn clear() {
    // SAFETY: deliberately makes every exception undeliverable; only the triple-fault
    // workload calls this, right before it raises one.
    unsafe { lidt(&DescriptorTablePointer { limit: 0, base: VirtAddr::zero() }) };
}

/// Page-fault error code: the page was present (a protection fault).
const PF_PRESENT: u64 = 1 << 0;
/// Page-fault error code: a write.
const PF_WRITE: u64 = 1 << 1;
/// Page-fault error code: an instruction fetch.
const PF_FETCH: u64 = 1 << 4;
/// Vectors with an oops cause.
const PAGE_FAULT: u64 = 14;

/// Why a page fault (or a double fault caused by one) cannot be handled.
fn oops_cause(vector: u64, error_code: u64, address: u64) -> Option<OopsCause> {
    use crate::mm::tables::{fault_stack_guard, stack_guard};
    let in_guard = |guard: u64| (guard..guard + 4096).contains(&address);
    if in_guard(stack_guard()) || in_guard(fault_stack_guard()) {
        // The CPU could not push the page fault's frame onto the full stack: a double fault.
        return Some(OopsCause::StackOverflow);
    }
    if vector != PAGE_FAULT {
        return None;
    }
    Some(if address < 4096 {
        OopsCause::NullPointer
    } else if error_code & PF_PRESENT != 0 && error_code & PF_FETCH != 0 {
        OopsCause::ExecuteNoExecute
    } else if error_code & PF_PRESENT != 0 && error_code & PF_WRITE != 0 {
        OopsCause::WriteToReadOnly
    } else if (VMALLOC_START..VMALLOC_END).contains(&address) {
        OopsCause::UnmappedVmalloc
    } else {
        OopsCause::Unhandled
    })
}

/// General-protection fault: a probe of a non-canonical address takes this one.
const GENERAL_PROTECTION: u64 = 13;

extern "C" fn exception_handler(frame: &mut TrapFrame) {
    // The APIC's interrupts, which only user mode takes (the kernel runs with IF clear).
    if frame.vector == u64::from(crate::apic::SPURIOUS_VECTOR) {
        return;
    }
    if frame.vector == u64::from(crate::apic::TIMER_VECTOR) {
        let expired = crate::apic::tick();
        if frame.cs & 3 == 3 {
            crate::process::tick(frame, expired);
        }
        return;
    }
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    // User mode's traps (system calls, faults, kills), and the system-call probe's.
    if crate::process::trap(frame, cr2) {
        return;
    }
    // The kernel touching user memory (a copy from or to a process): demand paging.
    if frame.vector == PAGE_FAULT && crate::process::kernel_fault(cr2, frame.error_code) {
        return;
    }
    // Demand paging: a first touch of the pager's area maps a page; the access is retried.
    if frame.vector == PAGE_FAULT
        && frame.error_code & PF_PRESENT == 0
        && crate::mm::pager::handle(cr2)
    {
        return;
    }
    // An instruction allowed to fault: resume at its fixup with what happened.
    if frame.vector == PAGE_FAULT || frame.vector == GENERAL_PROTECTION {
        if let Some(fixup) = crate::extable::fixup(frame.rip) {
            frame.gprs[TrapFrame::RAX] = if frame.vector == PAGE_FAULT { cr2 } else { 0 };
            frame.gprs[TrapFrame::RDX] = frame.error_code + 1;
            frame.rip = fixup;
            return;
        }
    }
    if let Some(cause) = oops_cause(frame.vector, frame.error_code, cr2) {
        error!("BUG: {}, address: {cr2:#018x}", cause.describe());
        let report = OopsReport {
            cause: cause as u32,
            reserved: 0,
            address: cr2,
            rip: frame.rip,
            error_code: frame.error_code,
        };
        hypercall::report_value(ReportKind::Oops, &report);
    }
    let (mnemonic, name) = exception_name(frame.vector);
    error!(
        "CPU exception {mnemonic} {name} (vector {}), error code {:#x}",
        frame.vector, frame.error_code
    );
    error!("RIP: {:#04x}:{:#018x} RFLAGS: {:#010x}", frame.cs, frame.rip, frame.rflags);
    error!("RSP: {:#04x}:{:#018x} CR2: {:#018x}", frame.ss, frame.rsp, cr2);
    for (names, values) in GPR_NAMES.chunks(3).zip(frame.gprs.chunks(3)) {
        let mut line = crate::console::Line::new();
        for (name, value) in names.iter().zip(values) {
            let _ =
                core::fmt::Write::write_fmt(&mut line, format_args!("{name:>3}: {value:#018x} "));
        }
        error!("{}", line.as_str());
    }
    let report = ExceptionReport {
        vector: frame.vector,
        error_code: frame.error_code,
        rip: frame.rip,
        cs: frame.cs,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: frame.ss,
        cr2,
        gprs: frame.gprs,
        reserved: 0,
    };
    hypercall::report_value(ReportKind::Exception, &report);
    hypercall::exit(GuestStatus::Exception)
}
