//! X11: idle time from the input devices themselves, through XInput2 raw events
//! selected on the root window (as `xss-lock`'s successors and xsecurelock's watchers
//! do), never from the MIT-SCREEN-SAVER counter, which `XResetScreenSaver`
//! (`xset s reset`, video players, "keep awake" scripts) resets without any input.
//!
//! Each raw event names its source device, so input from the XTEST devices (`xdotool`,
//! software mouse jigglers) is told apart from real keyboards, mice and touch screens.
//! A thread of its own waits on the X connection; it sleeps while nobody touches
//! anything, so waiting costs no CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::xinput::{self, ConnectionExt as _, Device, XIEventMask};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

use super::{IdleReading, IdleSource, IdleUnavailable};

/// What the watcher thread saw last.
#[derive(Debug)]
struct Inputs {
    last_real: Instant,
    /// The latest synthetic input and its device.
    last_synthetic: Option<(Instant, String)>,
    /// Why the watcher stopped (the display went away).
    broken: Option<String>,
}

#[derive(Debug)]
pub struct X11Idle {
    inputs: Arc<Mutex<Inputs>>,
}

/// Device IDs and names; XTEST devices are the synthetic ones.
#[derive(Debug, Default)]
struct Devices(HashMap<u16, String>);

impl Devices {
    fn query(conn: &RustConnection) -> Result<Self, String> {
        let reply = conn
            .xinput_xi_query_device(Device::ALL)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        Ok(Self(
            reply
                .infos
                .into_iter()
                .map(|d| (d.deviceid, String::from_utf8_lossy(&d.name).into_owned()))
                .collect(),
        ))
    }

    fn synthetic(&self, device: u16) -> Option<&str> {
        self.0.get(&device).map(String::as_str).filter(|name| name.contains("XTEST"))
    }
}

impl X11Idle {
    pub fn open() -> Result<Self, IdleUnavailable> {
        let display = std::env::var("DISPLAY").unwrap_or_default();
        if display.is_empty() {
            return Err(IdleUnavailable("no X display (DISPLAY is not set)".into()));
        }
        let unavailable =
            |why: String| IdleUnavailable(format!("input idle time on {display} is unknown: {why}"));
        let (conn, screen) = x11rb::connect(Some(&display))
            .map_err(|e| IdleUnavailable(format!("the X display {display} cannot be opened: {e}")))?;
        if conn
            .extension_information(xinput::X11_EXTENSION_NAME)
            .map_err(|e| unavailable(e.to_string()))?
            .is_none()
        {
            return Err(unavailable("the X server has no XInputExtension".into()));
        }
        let version = conn
            .xinput_xi_query_version(2, 2)
            .map_err(|e| unavailable(e.to_string()))?
            .reply()
            .map_err(|e| unavailable(e.to_string()))?;
        if version.major_version < 2 {
            return Err(unavailable(format!(
                "the X server speaks XInput {}.{}, raw input events need 2.0",
                version.major_version, version.minor_version
            )));
        }
        let root = conn.setup().roots[screen].root;
        let raw = XIEventMask::RAW_KEY_PRESS
            | XIEventMask::RAW_BUTTON_PRESS
            | XIEventMask::RAW_MOTION
            | XIEventMask::RAW_TOUCH_BEGIN;
        let masks = [
            // Raw events of every master device: each still names the slave it came from.
            xinput::EventMask { deviceid: Device::ALL_MASTER.into(), mask: vec![raw] },
            // Devices plugged in or out: their names are looked up again.
            xinput::EventMask { deviceid: Device::ALL.into(), mask: vec![XIEventMask::HIERARCHY] },
        ];
        conn.xinput_xi_select_events(root, &masks)
            .map_err(|e| unavailable(e.to_string()))?
            .check()
            .map_err(|e| unavailable(e.to_string()))?;
        let devices = Devices::query(&conn).map_err(unavailable)?;
        let inputs =
            Arc::new(Mutex::new(Inputs { last_real: Instant::now(), last_synthetic: None, broken: None }));
        let watched = inputs.clone();
        std::thread::Builder::new()
            .name("idle-xinput2".into())
            .spawn(move || watch(&conn, devices, &watched))
            .map_err(|e| unavailable(format!("cannot start its watcher thread: {e}")))?;
        Ok(Self { inputs })
    }
}

/// Notes every raw input event until the connection breaks.
fn watch(conn: &RustConnection, mut devices: Devices, inputs: &Mutex<Inputs>) {
    let why = loop {
        let event = match conn.wait_for_event() {
            Ok(event) => event,
            Err(e) => break format!("the X display went away: {e}"),
        };
        let source = match &event {
            Event::XinputRawKeyPress(e) => e.sourceid,
            Event::XinputRawButtonPress(e) => e.sourceid,
            Event::XinputRawMotion(e) => e.sourceid,
            Event::XinputRawTouchBegin(e) => e.sourceid,
            Event::XinputHierarchy(_) => {
                match Devices::query(conn) {
                    Ok(fresh) => devices = fresh,
                    Err(e) => break format!("the X server's devices cannot be listed: {e}"),
                }
                continue;
            }
            _ => continue,
        };
        if !devices.0.contains_key(&source) {
            if let Ok(fresh) = Devices::query(conn) {
                devices = fresh;
            }
        }
        let now = Instant::now();
        let mut seen = inputs.lock().unwrap_or_else(|p| p.into_inner());
        match devices.synthetic(source) {
            Some(name) => seen.last_synthetic = Some((now, name.to_owned())),
            None => seen.last_real = now,
        }
    };
    inputs.lock().unwrap_or_else(|p| p.into_inner()).broken = Some(why);
}

impl IdleSource for X11Idle {
    fn idle(&mut self) -> Result<IdleReading, IdleUnavailable> {
        let seen = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &seen.broken {
            return Err(IdleUnavailable(why.clone()));
        }
        Ok(IdleReading {
            real: seen.last_real.elapsed(),
            synthetic: seen.last_synthetic.as_ref().map(|(at, device)| (at.elapsed(), device.clone())),
        })
    }
}
