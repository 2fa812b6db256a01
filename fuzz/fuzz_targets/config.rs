//! The config parser and its checks: any text is a config or an error that names the field.
#![no_main]

mod limits;

use libfuzzer_sys::fuzz_target;
use teal_core::config::Config;

fuzz_target!(init: limits::init(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text) {
        let _ = config.validate();
    }
});
