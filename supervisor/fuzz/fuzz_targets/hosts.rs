//! hosts.toml files as an operator (or a mistake) writes them: parsed or refused, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(hosts) =
            limpetd::images::hosts::parse_hosts(std::path::Path::new("/etc/limpet/certs.d/x"), text)
        {
            for h in hosts {
                let _ = h.base();
            }
        }
    }
});
