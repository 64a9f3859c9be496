//! A stand-in PHI application for the end-to-end tests: one plain X window of a given
//! `WM_CLASS`, filled with one colour (so a test can tell whether it shows), that closes
//! when asked with `WM_DELETE_WINDOW`, or, with `--ignore-delete`, does not (as a
//! hung or stubborn application would) and ends only by signal.
//!
//! `phi-standin CLASS TITLE X Y [--ignore-delete]`

#![allow(clippy::unwrap_used)]

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt, CreateWindowAux, EventMask, PropMode, WindowClass};
use x11rb::protocol::Event;
use x11rb::wrapper::ConnectionExt as _;

/// Its colour: pure red, which nothing of the guard draws.
pub const COLOUR: u32 = 0x00ff_0000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, class, title, x, y, rest @ ..] = args.as_slice() else {
        eprintln!("usage: phi-standin CLASS TITLE X Y [--ignore-delete]");
        std::process::exit(2);
    };
    let ignore_delete = rest.iter().any(|a| a == "--ignore-delete");
    let (conn, screen) = x11rb::connect(None).unwrap();
    let s = &conn.setup().roots[screen];
    let atom = |name: &str| conn.intern_atom(false, name.as_bytes()).unwrap().reply().unwrap().atom;
    let (protocols, delete, pid, net_name, utf8) = (
        atom("WM_PROTOCOLS"),
        atom("WM_DELETE_WINDOW"),
        atom("_NET_WM_PID"),
        atom("_NET_WM_NAME"),
        atom("UTF8_STRING"),
    );
    let window = conn.generate_id().unwrap();
    let aux = CreateWindowAux::new().background_pixel(COLOUR).event_mask(EventMask::STRUCTURE_NOTIFY);
    let (x, y) = (x.parse().unwrap(), y.parse().unwrap());
    conn.create_window(
        s.root_depth,
        window,
        s.root,
        x,
        y,
        300,
        200,
        0,
        WindowClass::INPUT_OUTPUT,
        s.root_visual,
        &aux,
    )
    .unwrap();
    let wm_class = format!("{}\0{class}\0", class.to_lowercase());
    conn.change_property8(
        PropMode::REPLACE,
        window,
        AtomEnum::WM_CLASS,
        AtomEnum::STRING,
        wm_class.as_bytes(),
    )
    .unwrap();
    conn.change_property8(PropMode::REPLACE, window, AtomEnum::WM_NAME, AtomEnum::STRING, title.as_bytes())
        .unwrap();
    conn.change_property8(PropMode::REPLACE, window, net_name, utf8, title.as_bytes()).unwrap();
    conn.change_property32(PropMode::REPLACE, window, pid, AtomEnum::CARDINAL, &[std::process::id()])
        .unwrap();
    conn.change_property32(PropMode::REPLACE, window, protocols, AtomEnum::ATOM, &[delete]).unwrap();
    // Where it asked to be: a window manager honours a program-specified position.
    let hints = [1u32 << 2 | 1 << 3, x as u32, y as u32, 300, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    conn.change_property32(
        PropMode::REPLACE,
        window,
        AtomEnum::WM_NORMAL_HINTS,
        AtomEnum::WM_SIZE_HINTS,
        &hints,
    )
    .unwrap();
    conn.map_window(window).unwrap();
    conn.flush().unwrap();
    loop {
        match conn.wait_for_event() {
            Ok(Event::ClientMessage(m)) if m.type_ == protocols && m.data.as_data32()[0] == delete => {
                if ignore_delete {
                    eprintln!("phi-standin: WM_DELETE_WINDOW ignored");
                } else {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
