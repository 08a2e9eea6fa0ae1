//! The watchdog: a thread that interrupts `KVM_RUN` on the vCPU thread by signalling it
//! (`SIGRTMIN`, no-op handler), so that `KVM_RUN` returns `EINTR` and the loop can look at
//! the vCPU. It does so for two reasons:
//!
//! ```text
//! every HALT_POLL          a look at the vCPU: with the in-kernel LAPIC, `hlt` no longer
//!                          exits to the VMM, so a guest halted with interrupts off (it
//!                          can never wake) is found by its MP state
//! once the timeout passes  the run is over; re-sent every KICK_INTERVAL until the loop
//!                          notices, so a signal that lands outside `KVM_RUN` is not lost
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Interrupts `KVM_RUN` on the current thread every [`HALT_POLL`], and for good once
/// `timeout` has passed.
pub struct Watchdog {
    pub(super) timeout: Option<Duration>,
    expired: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Re-sent this often until the vCPU loop notices the timeout.
pub const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// How often the loop gets to check whether the guest halted for good: the delay before
/// such a guest's run ends.
pub const HALT_POLL: Duration = Duration::from_millis(100);

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Watchdog {
    /// Starts the watchdog for the calling (vCPU) thread.
    pub fn start(timeout: Option<Duration>) -> Self {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            if let Err(err) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
                log::warn!("cannot install the vCPU's kick signal handler ({err}); --timeout may not stop a busy guest, nor a halted one end");
            }
        });
        // SAFETY: pthread_self has no preconditions.
        let vcpu_thread = unsafe { libc::pthread_self() };
        let kick = move || {
            // SAFETY: the vCPU thread is alive: it joins this thread (Drop) before it
            // returns, and the signal's handler does nothing.
            unsafe { libc::pthread_kill(vcpu_thread, kick_signal()) };
        };
        let expired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = Arc::clone(&expired);
        // A timeout too far off for an `Instant` is no timeout.
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let thread = std::thread::spawn(move || loop {
            let now = Instant::now();
            let wait = match deadline {
                Some(deadline) if deadline <= now => {
                    flag.store(true, Ordering::SeqCst);
                    KICK_INTERVAL
                }
                Some(deadline) => HALT_POLL.min(deadline - now),
                None => HALT_POLL,
            };
            if stopped.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            kick();
        });
        Self { timeout, expired, stop: Some(stop), thread: Some(thread) }
    }

    /// Whether the time is up.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
