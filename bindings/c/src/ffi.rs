//! The boundary: raw pointers from C become references and slices here, and nowhere else;
//! panics stop here.
//!
//! Every exported function is `unsafe extern "C"`: its `# Safety` section states what the
//! C caller must guarantee, and the helpers below rely on exactly that.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::sealpost_result;
use crate::output::{sealpost_output, Outputs};

/// Call result inside the library: `Err` carries the code returned to C.
pub(crate) type CallResult = Result<(), sealpost_result>;

/// A handle type: knows whether a panic interrupted a call on it, and holds its outputs.
pub(crate) trait Handle {
    /// Set once a panic was caught during a call on this handle.
    fn poisoned(&mut self) -> &mut bool;
    /// The outputs waiting to be drained.
    fn outputs(&mut self) -> &mut Outputs;
}

/// Runs `f` (an entry point that has no handle yet), turning a panic into
/// `SEALPOST_PANIC` so that no unwinding crosses into C.
pub(crate) fn guard(f: impl FnOnce() -> CallResult) -> sealpost_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => sealpost_result::SEALPOST_OK,
        Ok(Err(code)) => code,
        Err(_) => sealpost_result::SEALPOST_PANIC,
    }
}

/// Runs `f` on the handle behind `ptr`. A NULL handle is `SEALPOST_NULL_ARGUMENT`; a
/// panic poisons the handle (its state may be half-updated), and a poisoned handle refuses
/// every call with `SEALPOST_PANIC`: after a bug, fail closed rather than seal or open
/// with inconsistent state.
///
/// # Safety
/// `ptr` is NULL or a handle returned by the matching `*_new` and not yet freed, and no
/// other thread uses it during the call.
pub(crate) unsafe fn with_handle<H: Handle>(
    ptr: *mut H,
    f: impl FnOnce(&mut H) -> CallResult,
) -> sealpost_result {
    // SAFETY: by this function's contract `ptr` is NULL or a live, exclusively used handle.
    let Some(handle) = (unsafe { ptr.as_mut() }) else {
        return sealpost_result::SEALPOST_NULL_ARGUMENT;
    };
    if *handle.poisoned() {
        return sealpost_result::SEALPOST_PANIC;
    }
    // Every call invalidates the output handed out last (documented on sealpost_output).
    handle.outputs().release_current();
    match catch_unwind(AssertUnwindSafe(|| f(&mut *handle))) {
        Ok(Ok(())) => sealpost_result::SEALPOST_OK,
        Ok(Err(code)) => code,
        Err(_) => {
            *handle.poisoned() = true;
            sealpost_result::SEALPOST_PANIC
        }
    }
}

/// Hands a new handle to C through `out` (NULL `out`: the handle is dropped).
///
/// # Safety
/// `out` is NULL or valid for writing one pointer.
pub(crate) unsafe fn give<H>(out: *mut *mut H, handle: H) -> CallResult {
    if out.is_null() {
        return Err(sealpost_result::SEALPOST_NULL_ARGUMENT);
    }
    // SAFETY: `out` is non-NULL and, by this function's contract, writable.
    unsafe { out.write(Box::into_raw(Box::new(handle))) };
    Ok(())
}

/// Takes back and drops a handle that `give` handed out; NULL is ignored. A panic while
/// dropping (none is expected) is caught: nothing unwinds into C.
///
/// # Safety
/// `ptr` is NULL or a handle from `give` (of type `H`) not yet freed; it is invalid after.
pub(crate) unsafe fn free<H>(ptr: *mut H) {
    if !ptr.is_null() {
        // SAFETY: by contract `ptr` came from `Box::into_raw` in `give` and is freed once.
        let handle = unsafe { Box::from_raw(ptr) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(handle)));
    }
}

/// The `*_next_output` functions: moves the next queued output into `*out`, or returns
/// `SEALPOST_NO_OUTPUT`. A NULL `out` loses no output.
///
/// # Safety
/// As [`with_handle`]; `out` is NULL or valid for writing one `sealpost_output`.
pub(crate) unsafe fn next_output<H: Handle>(
    handle: *mut H,
    out: *mut sealpost_output,
) -> sealpost_result {
    if out.is_null() {
        return sealpost_result::SEALPOST_NULL_ARGUMENT;
    }
    // SAFETY: `handle` meets with_handle's contract, by ours.
    unsafe {
        with_handle(handle, |h| match h.outputs().next() {
            // SAFETY: `out` is non-NULL and writable, by our contract.
            Some(view) => write_out(out, view),
            None => Err(sealpost_result::SEALPOST_NO_OUTPUT),
        })
    }
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and unchanged for
/// `'a` (the duration of the call).
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char) -> Result<&'a str, sealpost_result> {
    if ptr.is_null() {
        return Err(sealpost_result::SEALPOST_NULL_ARGUMENT);
    }
    // SAFETY: non-NULL and NUL-terminated, valid for 'a, by this function's contract.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map_err(|_| sealpost_result::SEALPOST_INVALID_UTF8)
}

/// An optional string argument: NULL is `None`.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn optional_str_arg<'a>(
    ptr: *const c_char,
) -> Result<Option<&'a str>, sealpost_result> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: same contract as ours.
        unsafe { str_arg(ptr) }.map(Some)
    }
}

/// A byte-buffer argument: `len` bytes at `ptr`; NULL is allowed only with `len` 0.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that stay unchanged for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(
    ptr: *const u8,
    len: usize,
) -> Result<&'a [u8], sealpost_result> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(sealpost_result::SEALPOST_NULL_ARGUMENT)
        };
    }
    if len > isize::MAX as usize {
        return Err(sealpost_result::SEALPOST_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL, `len` readable bytes valid for 'a by contract, len <= isize::MAX.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes `value` to an out-parameter.
///
/// # Safety
/// `out` is NULL or valid for writing one `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> CallResult {
    if out.is_null() {
        return Err(sealpost_result::SEALPOST_NULL_ARGUMENT);
    }
    // SAFETY: non-NULL and writable by this function's contract.
    unsafe { out.write(value) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(bool, Outputs);
    impl Handle for H {
        fn poisoned(&mut self) -> &mut bool {
            &mut self.0
        }
        fn outputs(&mut self) -> &mut Outputs {
            &mut self.1
        }
    }

    #[test]
    fn a_panic_is_caught_and_poisons_the_handle() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut h = H(false, Outputs::default());
        // SAFETY: a live, exclusively used handle.
        let first = unsafe { with_handle(&mut h, |_| panic!("boom")) };
        // SAFETY: as above.
        let second = unsafe { with_handle(&mut h, |_| Ok(())) };
        std::panic::set_hook(previous);
        assert_eq!(first, sealpost_result::SEALPOST_PANIC);
        assert_eq!(
            second,
            sealpost_result::SEALPOST_PANIC,
            "poisoned handle refuses"
        );
        assert_eq!(
            guard(|| panic!("boom")),
            sealpost_result::SEALPOST_PANIC,
            "entry points without a handle"
        );
    }

    #[test]
    fn null_and_bad_arguments_are_errors() {
        // SAFETY: NULL is allowed by every helper's contract.
        unsafe {
            assert_eq!(
                with_handle::<H>(std::ptr::null_mut(), |_| Ok(())),
                sealpost_result::SEALPOST_NULL_ARGUMENT
            );
            assert_eq!(
                str_arg(std::ptr::null()),
                Err(sealpost_result::SEALPOST_NULL_ARGUMENT)
            );
            assert_eq!(bytes_arg(std::ptr::null(), 0), Ok(&[][..]));
            assert_eq!(
                bytes_arg(std::ptr::null(), 1),
                Err(sealpost_result::SEALPOST_NULL_ARGUMENT)
            );
        }
        let bad = [0xffu8, 0];
        // SAFETY: a NUL-terminated buffer alive for the call.
        let r = unsafe { str_arg(bad.as_ptr().cast()) };
        assert_eq!(r, Err(sealpost_result::SEALPOST_INVALID_UTF8));
    }
}
