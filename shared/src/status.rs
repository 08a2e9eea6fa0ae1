//! Exit statuses the guest writes to [`crate::ports::DEBUG_EXIT`].
//!
//! The guest uses values below [`GUEST_STATUS_LIMIT`]; the VMM keeps the values from 64 up
//! for its own outcomes (usage errors, host errors, guest crashes, timeouts).

/// Guest statuses are below this value.
pub const GUEST_STATUS_LIMIT: u8 = 64;

/// Why the guest ended its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GuestStatus {
    /// The workload ran and every check passed.
    Success = 0,
    /// The workload ran and a check failed (details were reported).
    CheckFailed = 1,
    /// The command line has an unknown option or a bad value.
    BadCommandLine = 2,
    /// The guest kernel panicked.
    Panic = 3,
    /// A CPU exception the kernel does not handle.
    Exception = 4,
    /// The boot could not go on (for example, no usable memory in the e820 map).
    BootFailed = 5,
}

impl GuestStatus {
    /// The status with this value, if the guest defines one.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Success,
            1 => Self::CheckFailed,
            2 => Self::BadCommandLine,
            3 => Self::Panic,
            4 => Self::Exception,
            5 => Self::BootFailed,
            _ => return None,
        })
    }

    /// A short lower-case description, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::CheckFailed => "a check failed",
            Self::BadCommandLine => "bad command line",
            Self::Panic => "kernel panic",
            Self::Exception => "unhandled CPU exception",
            Self::BootFailed => "boot failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_stay_below_the_limit() {
        for value in 0..=u8::MAX {
            if let Some(status) = GuestStatus::from_u8(value) {
                assert_eq!(status as u8, value);
                assert!(value < GUEST_STATUS_LIMIT);
            }
        }
        assert_eq!(GuestStatus::from_u8(6), None);
    }
}
