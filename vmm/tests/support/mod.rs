//! Test support: a kvm-mm guest's RAM built on the host by the guest library, for testing
//! the inspector without KVM.
//!
//! - [`ram`]: guest RAM in host memory and the guest library's memory traits over it;
//! - [`image`]: the image, built as the kernel boots, and the truth about it;
//! - [`access`]: inspecting an image through a RAM file or mapped memory;
//! - [`locate`]: where things are in an image, to read or corrupt them.

// Each test binary uses a part of the support.
#![allow(dead_code)]

pub mod access;
pub mod image;
pub mod locate;
pub mod ram;
