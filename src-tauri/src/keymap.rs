//! Keymap hardening while locked. XKB lets a key carry actions that the X server itself
//! carries out: `XF86Ungrab` (Ctrl+Alt+KP_Divide) breaks every grab, `XF86ClearGrab`
//! (Ctrl+Alt+KP_Multiply) kills the clients holding grabs (CVE-2012-0064),
//! `Terminate_Server` ends the session, `XF86Switch_VT_n` leaves it. Anyone in the
//! session may turn the first two on (`setxkbmap -option grab:break_actions`). So at
//! the lock the keymap is read (`xkbcomp`, the X server's own compiler), those actions
//! are replaced with `NoAction()`, the result is loaded, and the keymap as it was comes
//! back at the unlock.

use std::io::Write;
use std::process::{Command, Stdio};

/// Actions the server carries out itself, which a lock must not leave on any key:
/// XFree86 private actions (ungrab, kill grabbing clients, video mode, log dumps),
/// server termination and VT switches.
const DANGEROUS: &[&str] = &["Private(type=0x86", "Terminate(", "SwitchScreen("];

/// The keymap (`xkbcomp -xkb` text) with every dangerous action replaced by `NoAction()`,
/// and what was taken out, each named once.
pub fn harden(keymap: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(keymap.len());
    let mut removed: Vec<String> = Vec::new();
    let mut rest = keymap;
    loop {
        let next = DANGEROUS.iter().filter_map(|d| rest.find(d)).min();
        let Some(start) = next else {
            out.push_str(rest);
            break;
        };
        let Some(len) = rest[start..].find(')') else {
            out.push_str(rest);
            break;
        };
        let action = &rest[start..=start + len];
        let name = describe(action);
        if !removed.contains(&name) {
            removed.push(name);
        }
        out.push_str(&rest[..start]);
        out.push_str("NoAction()");
        rest = &rest[start + len + 1..];
    }
    (out, removed)
}

/// A short name for an action: `Terminate`, `SwitchScreen`, or the XFree86 private
/// action's own name (`Ungrab`, `ClsGrb`, `PrGrbs`…) spelled by its data bytes.
fn describe(action: &str) -> String {
    if action.starts_with("Terminate") {
        return "Terminate".into();
    }
    if action.starts_with("SwitchScreen") {
        return "SwitchScreen".into();
    }
    let spelled: String = action
        .split(',')
        .filter_map(|part| part.split_once("=0x").map(|(_, hex)| hex.trim_end_matches(')')))
        .skip(1) // the type
        .filter_map(|hex| u8::from_str_radix(hex, 16).ok())
        .take_while(|b| *b != 0)
        .map(char::from)
        .filter(char::is_ascii_graphic)
        .collect();
    format!("XF86 private action {spelled}")
}

/// The keymap in force on `display`, as `xkbcomp` writes it.
pub fn read(display: &str) -> Result<String, String> {
    let out = Command::new("xkbcomp")
        .args(["-w", "0", "-xkb", display, "-"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("xkbcomp cannot run: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "xkbcomp could not read the keymap: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("the keymap is not text: {e}"))
}

/// Loads `keymap` (xkbcomp text) into `display`.
pub fn load(display: &str, keymap: &str) -> Result<(), String> {
    let mut child = Command::new("xkbcomp")
        .args(["-w", "0", "-", display])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("xkbcomp cannot run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(keymap.as_bytes()).map_err(|e| format!("xkbcomp did not take the keymap: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("xkbcomp failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "xkbcomp could not load the keymap: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYMAP: &str = r#"
    interpret Terminate_Server+AnyOfOrNone(all) {
        action= Terminate();
    };
    interpret XF86Switch_VT_1+AnyOfOrNone(all) {
        repeat= True;
        action= SwitchScreen(screen=1,!same);
    };
    interpret XF86Ungrab+AnyOfOrNone(all) {
        action= Private(type=0x86,data[0]=0x55,data[1]=0x6e,data[2]=0x67,data[3]=0x72,data[4]=0x61,data[5]=0x62,data[6]=0x00);
    };
    interpret Shift_L+AnyOf(all) {
        action= SetMods(modifiers=Shift,clearLocks);
    };
    interpret XF86Switch_VT_2+AnyOfOrNone(all) {
        action= SwitchScreen(screen=2,!same);
    };
"#;

    #[test]
    fn grab_breaking_server_ending_and_vt_switching_actions_are_taken_out() {
        let (hardened, removed) = harden(KEYMAP);
        assert_eq!(removed, ["Terminate", "SwitchScreen", "XF86 private action Ungrab"]);
        for gone in DANGEROUS {
            assert!(!hardened.contains(gone), "{gone} left in:\n{hardened}");
        }
        assert_eq!(hardened.matches("NoAction()").count(), 4);
        assert!(hardened.contains("action= SetMods(modifiers=Shift,clearLocks);"), "other actions stay");
        assert!(hardened.contains("interpret XF86Switch_VT_2+AnyOfOrNone(all)"), "only the actions change");
    }

    #[test]
    fn a_keymap_without_them_is_left_as_it_is() {
        let plain = "interpret Shift_L+AnyOf(all) { action= SetMods(modifiers=Shift); };";
        assert_eq!(harden(plain), (plain.to_owned(), vec![]));
    }
}
