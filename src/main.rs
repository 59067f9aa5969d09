fn main() {
    // before any thread starts and before the first large tensor (see `dapt::heap`)
    dapt::heap::keep_freed_memory();
    quiet_vulkan_loader();
    std::process::exit(dapt::cli::main());
}

/// The Vulkan loader prints "XDG_RUNTIME_DIR is invalid" on every adapter probe when the
/// variable is unset (servers, containers, CI); give it a private directory instead.
fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dapt-runtime-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
}
