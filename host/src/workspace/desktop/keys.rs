//! Key names as models write them (`ctrl+L`, `Return`, `super`, `Page_Down`, `cmd+shift+t`)
//! turned into X keysyms. Names follow X's keysym names (what xdotool takes), matched without
//! regard to case, with the aliases models use for the common keys.

/// A key as X knows it: its keysym.
pub type Keysym = u32;

/// One key of a combination, and whether it is a modifier (held while the others are pressed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub keysym: Keysym,
    pub modifier: bool,
}

const SHIFT_L: Keysym = 0xffe1;
const CONTROL_L: Keysym = 0xffe3;
const ALT_L: Keysym = 0xffe9;
const SUPER_L: Keysym = 0xffeb;
const META_L: Keysym = 0xffe7;

/// Longest key name a model may send (the longest X keysym name is under 30 characters).
const MAX_NAME: usize = 40;

/// The keys of a combination such as `ctrl+shift+t`, in the order written: modifiers are
/// pressed first and released last by the caller. A lone upper-case letter after a modifier
/// means its key (`ctrl+L` is `ctrl+l`); alone, it is the capital (`L` is `shift+l`).
pub fn combination(text: &str) -> Result<Vec<Key>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the key combination is empty; name a key such as `Return` or `ctrl+l`".into());
    }
    // `+` alone, or a combination ending in `+` (`ctrl++`), names the plus key.
    let mut names: Vec<&str> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find('+') {
            Some(0) => {
                names.push("+");
                rest = rest[1..].strip_prefix('+').unwrap_or(&rest[1..]);
            }
            Some(i) => {
                names.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                names.push(rest);
                rest = "";
            }
        }
    }
    let with_modifiers = names.len() > 1;
    let mut keys = Vec::with_capacity(names.len() + 1);
    for name in names {
        let name = name.trim();
        if let Some(upper) = lone_capital(name) {
            if with_modifiers {
                keys.push(Key { keysym: upper.to_ascii_lowercase() as Keysym, modifier: false });
            } else {
                keys.push(Key { keysym: SHIFT_L, modifier: true });
                keys.push(Key { keysym: upper.to_ascii_lowercase() as Keysym, modifier: false });
            }
            continue;
        }
        keys.push(key(name)?);
    }
    Ok(keys)
}

fn lone_capital(name: &str) -> Option<char> {
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_uppercase() => Some(c),
        _ => None,
    }
}

/// One key by name: `a`, `Return`, `ctrl`, `F5`, `Page_Down`, `KP_Enter`, `é`.
pub fn key(name: &str) -> Result<Key, String> {
    if name.is_empty() {
        return Err("a key name is empty (two `+` in a row?); write combinations like `ctrl+shift+t`".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("`{}…` is not a key name; to enter text, use the `type` action", &name[..MAX_NAME]));
    }
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Ok(Key { keysym: char_keysym(c), modifier: false });
    }
    let lower = name.to_ascii_lowercase();
    if let Some(modifier) = modifier(&lower) {
        return Ok(Key { keysym: modifier, modifier: true });
    }
    if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u32>().ok())
        && (1..=35).contains(&n)
    {
        return Ok(Key { keysym: 0xffbe + n - 1, modifier: false });
    }
    if let Some(keysym) = named(&lower) {
        return Ok(Key { keysym, modifier: false });
    }
    Err(format!(
        "`{name}` is not a key name this desktop knows; use X key names such as Return, Escape, Tab, BackSpace, Delete, Home, End, Page_Up, Page_Down, Up, Down, Left, Right, F1-F12, space, or a single character, joined with `+` to modifiers (ctrl, shift, alt, super)"
    ))
}

/// The keysym of a character: Latin-1 characters are their own code, the rest are Unicode
/// keysyms (0x01000000 + the code point), which X maps on demand.
pub fn char_keysym(c: char) -> Keysym {
    match c {
        '\n' | '\r' => 0xff0d,
        '\t' => 0xff09,
        '\u{8}' => 0xff08,
        c if (' '..='~').contains(&c) || ('\u{a0}'..='\u{ff}').contains(&c) => c as Keysym,
        c => 0x0100_0000 + c as Keysym,
    }
}

fn modifier(lower: &str) -> Option<Keysym> {
    Some(match lower {
        "ctrl" | "control" | "ctl" | "control_l" | "ctrl_l" => CONTROL_L,
        "control_r" | "ctrl_r" => 0xffe4,
        "shift" | "shift_l" => SHIFT_L,
        "shift_r" => 0xffe2,
        "alt" | "option" | "opt" | "alt_l" => ALT_L,
        "alt_r" | "altgr" => 0xffea,
        "super" | "super_l" | "win" | "windows" | "cmd" | "command" | "logo" => SUPER_L,
        "super_r" => 0xffec,
        "meta" | "meta_l" => META_L,
        "meta_r" => 0xffe8,
        "hyper" | "hyper_l" => 0xffed,
        _ => return None,
    })
}

fn named(lower: &str) -> Option<Keysym> {
    let compact: String = lower.chars().filter(|c| *c != '_' && *c != '-' && *c != ' ').collect();
    Some(match compact.as_str() {
        "return" | "enter" | "ret" => 0xff0d,
        "kpenter" => 0xff8d,
        "escape" | "esc" => 0xff1b,
        "tab" => 0xff09,
        "isolefttab" | "backtab" => 0xfe20,
        "backspace" | "bksp" => 0xff08,
        "delete" | "del" => 0xffff,
        "insert" | "ins" => 0xff63,
        "home" => 0xff50,
        "end" => 0xff57,
        "pageup" | "prior" | "pgup" => 0xff55,
        "pagedown" | "next" | "pgdn" => 0xff56,
        "left" | "arrowleft" | "leftarrow" => 0xff51,
        "up" | "arrowup" | "uparrow" => 0xff52,
        "right" | "arrowright" | "rightarrow" => 0xff53,
        "down" | "arrowdown" | "downarrow" => 0xff54,
        "space" | "spacebar" => 0x20,
        "capslock" => 0xffe5,
        "numlock" => 0xff7f,
        "scrolllock" => 0xff14,
        "print" | "printscreen" | "prtsc" => 0xff61,
        "pause" | "break" => 0xff13,
        "menu" | "apps" | "contextmenu" => 0xff67,
        "minus" => 0x2d,
        "plus" => 0x2b,
        "equal" | "equals" => 0x3d,
        "comma" => 0x2c,
        "period" | "dot" => 0x2e,
        "slash" => 0x2f,
        "backslash" => 0x5c,
        "semicolon" => 0x3b,
        "colon" => 0x3a,
        "apostrophe" | "quote" => 0x27,
        "quotedbl" => 0x22,
        "grave" | "backtick" => 0x60,
        "asciitilde" | "tilde" => 0x7e,
        "bracketleft" => 0x5b,
        "bracketright" => 0x5d,
        "braceleft" => 0x7b,
        "braceright" => 0x7d,
        "parenleft" => 0x28,
        "parenright" => 0x29,
        "less" => 0x3c,
        "greater" => 0x3e,
        "question" => 0x3f,
        "exclam" => 0x21,
        "at" => 0x40,
        "numbersign" | "hash" => 0x23,
        "dollar" => 0x24,
        "percent" => 0x25,
        "asciicircum" | "caret" => 0x5e,
        "ampersand" => 0x26,
        "asterisk" => 0x2a,
        "underscore" => 0x5f,
        "bar" | "pipe" => 0x7c,
        "kpadd" => 0xffab,
        "kpsubtract" => 0xffad,
        "kpmultiply" => 0xffaa,
        "kpdivide" => 0xffaf,
        "kpdecimal" => 0xffae,
        "audiomute" | "xf86audiomute" => 0x1008ff12,
        "audiolowervolume" | "xf86audiolowervolume" | "volumedown" => 0x1008ff11,
        "audioraisevolume" | "xf86audioraisevolume" | "volumeup" => 0x1008ff13,
        "audioplay" | "xf86audioplay" => 0x1008ff14,
        other => {
            // KP_0 .. KP_9.
            let digit = other.strip_prefix("kp")?.parse::<u32>().ok().filter(|d| *d <= 9)?;
            0xffb0 + digit
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms(text: &str) -> Vec<Keysym> {
        combination(text).unwrap().iter().map(|k| k.keysym).collect()
    }

    #[test]
    fn models_spellings_of_common_keys_are_understood() {
        assert_eq!(syms("Return"), [0xff0d]);
        assert_eq!(syms("enter"), [0xff0d]);
        assert_eq!(syms("Page_Down"), syms("pagedown"));
        assert_eq!(syms("super"), [SUPER_L]);
        assert_eq!(syms("cmd"), [SUPER_L]);
        assert_eq!(syms("F5"), [0xffc2]);
        assert_eq!(syms("KP_Enter"), [0xff8d]);
        assert_eq!(syms("KP_7"), [0xffb7]);
    }

    #[test]
    fn a_capital_after_a_modifier_is_its_key_and_alone_is_the_capital() {
        assert_eq!(syms("CTRL+L"), [CONTROL_L, 'l' as u32]);
        assert_eq!(syms("ctrl+shift+T"), [CONTROL_L, SHIFT_L, 't' as u32]);
        assert_eq!(syms("L"), [SHIFT_L, 'l' as u32]);
        assert_eq!(syms("l"), ['l' as u32]);
    }

    #[test]
    fn plus_can_be_a_key_of_its_own() {
        assert_eq!(syms("ctrl++"), [CONTROL_L, '+' as u32]);
        assert_eq!(syms("+"), ['+' as u32]);
        assert_eq!(syms("ctrl+plus"), [CONTROL_L, '+' as u32]);
    }

    #[test]
    fn characters_outside_latin1_become_unicode_keysyms() {
        assert_eq!(char_keysym('é'), 0xe9);
        assert_eq!(char_keysym('€'), 0x0100_20ac);
        assert_eq!(char_keysym('\n'), 0xff0d);
    }

    #[test]
    fn unknown_names_say_what_is_known() {
        let error = combination("ctrl+flux").unwrap_err();
        assert!(error.contains("`flux`") && error.contains("Return"), "{error}");
        assert!(combination("").is_err());
        assert!(combination("a".repeat(100).as_str()).unwrap_err().contains("type"));
    }
}
