//! Reading JSON values the way Mosquitto's plugin reads them with cJSON: object keys match
//! case-insensitively (the first match wins), and a number read as an integer is truncated and
//! saturated to the `int` range.

use serde_json::Value;

/// The member `key` of an object, compared without regard to ASCII case.
pub(super) fn get<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// A member that must be a string if present: `Ok(None)` when absent, `Err(())` when present
/// with another type (the plugin's `json_get_string` then fails).
pub(super) fn string<'a>(obj: &'a Value, key: &str) -> Result<Option<&'a str>, ()> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// A string member, or `None` when absent or of another type.
pub(super) fn get_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    string(obj, key).ok().flatten()
}

/// An integer member as cJSON's `valueint` gives it, or `None` when absent or not a number.
pub(super) fn get_int(obj: &Value, key: &str) -> Option<i32> {
    // `as` truncates toward zero and saturates, as cJSON does.
    get(obj, key).and_then(Value::as_f64).map(|n| n as i32)
}

/// A boolean member, or `None` when absent or not a boolean.
pub(super) fn get_bool(obj: &Value, key: &str) -> Option<bool> {
    get(obj, key).and_then(Value::as_bool)
}
