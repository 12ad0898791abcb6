//! Channel-name and query-string decoding (`http::request`): what a path
//! segment and a query string become.
//!
//! The input is read twice: as a raw path segment and query string, and
//! as structured join options to encode with the standard form encoder.
//! Checks:
//! - `decode_channel` agrees with percent-decoding written from the URL
//!   standard; a name it returns is never empty, never over 256 bytes and
//!   valid UTF-8; every refusal has the reason the reference gives;
//! - any name, percent-encoded byte by byte, decodes back to itself;
//! - `parse_join_options` reads each option from its first occurrence
//!   exactly as the standard form decoder does (empty means unset), keeps
//!   aliases within 64 bytes, and turns flags on only for `true`;
//! - options written by the standard form encoder, among unknown keys,
//!   are read back unchanged.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use itty_relay::http::request::{decode_channel, parse_join_options, percent_decode};
use itty_relay::http::JoinOptions;
use itty_relay_fuzz::reference;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Options {
    alias: Option<String>,
    alias_key: bool,
    echo: bool,
    announce: bool,
    list: bool,
    join_key: Option<String>,
    send_key: Option<String>,
    unknown: Vec<(String, String)>,
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_channel(&text);
    check_options(&text);
    if let Ok(options) = Options::arbitrary_take_rest(Unstructured::new(data)) {
        round_trip(&options);
    }
});

fn check_channel(raw: &str) {
    assert_eq!(
        percent_decode(raw, false),
        reference::percent_decode(raw, false)
    );
    assert_eq!(
        percent_decode(raw, true),
        reference::percent_decode(raw, true)
    );
    let expected = match reference::percent_decode(raw, false) {
        None => Err("channel name has an invalid percent escape"),
        Some(bytes) if bytes.is_empty() => Err("channel name is empty"),
        Some(bytes) if bytes.len() > 256 => Err("channel name is longer than 256 bytes"),
        Some(bytes) => String::from_utf8(bytes).map_err(|_| "channel name is not valid utf-8"),
    };
    let decoded = decode_channel(raw);
    match (&decoded, &expected) {
        (Ok(name), Ok(want)) => {
            assert_eq!(name, want);
            assert!(!name.is_empty() && name.len() <= 256);
        }
        (Err(refusal), Err(reason)) => {
            assert_eq!(refusal.status, 400);
            assert_eq!(&refusal.body, reason);
        }
        _ => panic!("{raw:?}: {decoded:?}, expected {expected:?}"),
    }
    if let Ok(name) = decoded {
        let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(decode_channel(&encoded).as_ref(), Ok(&name));
        assert_eq!(decode_channel(&encoded.to_lowercase()).as_ref(), Ok(&name));
    }
}

fn check_options(query: &str) {
    let Ok(options) = parse_join_options(query) else {
        return;
    };
    // The first value of each key, as the standard form decoder reads it.
    let first = |key: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let set = |v: Option<String>| v.filter(|v| !v.is_empty());
    let alias = match first("as") {
        Some(alias) => set(Some(alias)),
        None => set(first("alias")),
    };
    assert_eq!(options.alias, alias);
    assert!(options.alias.as_ref().is_none_or(|a| a.len() <= 64));
    assert_eq!(options.echo, first("echo").as_deref() == Some("true"));
    assert_eq!(
        options.announce,
        first("announce").as_deref() == Some("true")
    );
    assert_eq!(options.list, first("list").as_deref() == Some("true"));
    assert_eq!(options.join_key, set(first("joinKey")));
    assert_eq!(options.send_key, set(first("sendKey")));
}

fn round_trip(options: &Options) {
    const KNOWN: [&str; 7] = [
        "as", "alias", "echo", "announce", "list", "joinKey", "sendKey",
    ];
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in &options.unknown {
        if !KNOWN.contains(&key.as_str()) {
            query.append_pair(key, value);
        }
    }
    let alias = options
        .alias
        .as_ref()
        .filter(|a| !a.is_empty() && a.len() <= 64);
    if let Some(alias) = alias {
        query.append_pair(if options.alias_key { "alias" } else { "as" }, alias);
    }
    let flag = |on: bool| if on { "true" } else { "false" };
    query.append_pair("echo", flag(options.echo));
    query.append_pair("announce", flag(options.announce));
    query.append_pair("list", flag(options.list));
    for (key, value) in [
        ("joinKey", &options.join_key),
        ("sendKey", &options.send_key),
    ] {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    let query = query.finish();
    let expected = JoinOptions {
        alias: alias.cloned(),
        echo: options.echo,
        announce: options.announce,
        list: options.list,
        join_key: options.join_key.clone().filter(|k| !k.is_empty()),
        send_key: options.send_key.clone().filter(|k| !k.is_empty()),
    };
    assert_eq!(parse_join_options(&query), Ok(expected), "{query}");
}
