//! `_start`: the first instructions, run on the VMM's boot page tables.
//!
//! The VMM enters in 64-bit mode with RSI = the zero page's physical address. The stack
//! lives in its own section after `.bss`, so clearing `.bss` does not clear it.

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    cld",
    "    lea rsp, [rip + __stack_top]",
    "    mov r12, rsi",
    "    lea rdi, [rip + __bss_start]",
    "    lea rcx, [rip + __bss_end]",
    "    sub rcx, rdi",
    "    xor eax, eax",
    "    rep stosb",
    "    mov rdi, r12",
    "    call {kernel_main}",
    "    ud2",
    kernel_main = sym crate::kernel_main,
);
