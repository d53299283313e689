//! `entry_points!`: a table of CUDA driver entry points resolved by name from the library cudarc
//! loaded, each one's argument list checked against cudarc's declaration of the same symbol.

/// Declares a struct whose fields are driver entry points, `None` when the driver lacks one.
///
/// ```text
/// entry_points! {
///     pub struct Ext {
///         mem_alloc_async: cuMemAllocAsync(*mut sys::CUdeviceptr, usize, sys::CUstream);
///     }
/// }
/// ```
///
/// Each field is resolved by the exact symbol name (`cuMemAllocAsync`), and the argument list is
/// checked at compile time against `cudarc::driver::sys::cuMemAllocAsync`: a list that differs
/// from cudarc's does not build. The result is [`RawResult`](crate::ffi::cuda::RawResult), the C
/// `int` the driver returns, not cudarc's `CUresult` enum (see the module doc of `ffi`).
macro_rules! entry_points {
    (
        $(#[$meta:meta])*
        $vis:vis struct $table:ident {
            $( $field:ident : $symbol:ident ( $($arg:ty),* $(,)? ); )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, Copy)]
        $vis struct $table {
            $(
                #[doc = concat!("`", stringify!($symbol), "`")]
                pub $field: Option<unsafe extern "C" fn($($arg),*) -> $crate::ffi::cuda::RawResult>,
            )*
        }

        impl $table {
            /// Resolves every entry point in `lib`; one the library lacks stays `None`.
            pub(crate) fn resolve(lib: &::libloading::Library) -> Self {
                Self {
                    $(
                        // SAFETY: the field's type is cudarc's declaration of this symbol (checked
                        // below) with the result read as a C int; the library stays loaded for the
                        // life of the process (the driver library is never closed).
                        $field: unsafe { $crate::ffi::cuda::lookup(lib, stringify!($symbol)) },
                    )*
                }
            }

            /// The symbols of this table the library lacks, in declaration order.
            #[allow(dead_code)]
            pub(crate) fn missing(&self) -> Vec<&'static str> {
                let mut missing = Vec::new();
                $(
                    if self.$field.is_none() {
                        missing.push(stringify!($symbol));
                    }
                )*
                missing
            }

            /// Every symbol of this table, in declaration order.
            #[allow(dead_code)]
            pub const SYMBOLS: &'static [&'static str] = &[$(stringify!($symbol)),*];
        }

        // The argument lists are cudarc's: a mismatch is a type error here.
        const _: () = {
            $(
                let _: unsafe fn($($arg),*) -> ::cudarc::driver::sys::CUresult =
                    ::cudarc::driver::sys::$symbol;
            )*
        };
    };
}
