//! Locking the simulator's mutable state. A leaf: every module that keeps state locks through here.

use std::sync::{Mutex, MutexGuard};

/// Poisoning only means another request panicked mid-update; the maps stay usable, so carry on
/// rather than turning one bug into a dead simulator.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
