//! The bundled `files` plugin: `read_file`, `write_file` and `edit_files` on the chat's
//! workspace, through the `workspace-fs` capability.

pub mod text;

#[cfg(feature = "plugin")]
mod plugin;
