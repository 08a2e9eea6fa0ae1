//! The timeout: a watchdog thread that interrupts `KVM_RUN` on the vCPU thread once the
//! time is up, by signalling it (`SIGRTMIN`, no-op handler) so that `KVM_RUN` returns
//! `EINTR`. It keeps signalling every [`KICK_INTERVAL`] until the loop notices, so a signal
//! that lands outside `KVM_RUN` is not lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

/// Interrupts `KVM_RUN` on the current thread once `timeout` has passed.
pub struct Watchdog {
    pub(super) timeout: Duration,
    expired: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Re-sent this often until the vCPU loop notices the timeout.
pub const KICK_INTERVAL: Duration = Duration::from_millis(5);

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Watchdog {
    /// Starts the watchdog for the calling (vCPU) thread.
    pub fn start(timeout: Duration) -> Self {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            if let Err(err) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
                log::warn!("cannot install the timeout signal handler ({err}); --timeout may not stop a busy guest");
            }
        });
        // SAFETY: pthread_self has no preconditions.
        let vcpu_thread = unsafe { libc::pthread_self() };
        let expired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = Arc::clone(&expired);
        let thread = std::thread::spawn(move || {
            if stopped.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            while stopped.recv_timeout(KICK_INTERVAL) == Err(RecvTimeoutError::Timeout) {
                // SAFETY: the vCPU thread is alive: it joins this thread (Drop) before it
                // returns, and the signal's handler does nothing.
                unsafe { libc::pthread_kill(vcpu_thread, kick_signal()) };
            }
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
