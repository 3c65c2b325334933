//! Progress of a long call, shown to the person watching the chat (capability `progress`).

/// Reports what the call is doing; `fraction` in 0.0..=1.0 when known.
pub fn report(message: &str, fraction: Option<f32>) {
    crate::bindings::toolhost::plugin::progress::report(message, fraction)
}
