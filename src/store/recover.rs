//! Salvaging a damaged store: every row SQLite can still read goes into a fresh one.
//!
//! The damaged file (with its `-wal` and `-shm`) is renamed to `midge.db.corrupt-<unix time>`
//! and opened read-only; nothing writes to it. Each table is read in rowid order. A damaged
//! page makes the scan fail at some rowid; the scan then probes ahead with growing steps until
//! a seek succeeds again and binary-searches back to the first rowid past the damage, so one
//! bad leaf page costs only the rows on it. Each row read is decoded with the same range
//! checks as a normal start and applied to the fresh store as the
//! [`Change`](super::model::Change) it stands for.
//!
//! SQLite keeps no checksums: bytes overwritten inside a value that still decodes (a payload,
//! a topic) cannot be detected, and such a row comes back with the damaged value.

use super::bodylog::BodyLog;
use super::model::TableRecovery;
use super::schema::{self, Table, TABLES};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// Upper bound on seeks spent probing past damaged pages of one table (each is a few page
/// reads), so a store damaged everywhere still starts in bounded time.
const MAX_PROBES: u32 = 20_000;

/// Renames the store and its WAL files aside; returns the new name of the main file.
pub(crate) fn move_aside(path: &Path, now_unix: u64) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "midge.db".into());
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut aside = dir.join(format!("{name}.corrupt-{now_unix}"));
    let mut n = 1;
    while aside.exists() {
        aside = dir.join(format!("{name}.corrupt-{now_unix}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let from = with_suffix(path, suffix);
        if from.exists() {
            std::fs::rename(&from, with_suffix(&aside, suffix))?;
        }
    }
    Ok(aside)
}

/// `path` with `suffix` appended to its file name (SQLite's naming of the WAL files).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Copies every readable row of the damaged store at `damaged` into `fresh` (one
/// transaction) and says, per table, what was recovered and lost.
pub(crate) fn salvage(
    damaged: &Path,
    fresh: &mut Connection,
    log: &mut BodyLog,
) -> rusqlite::Result<Vec<TableRecovery>> {
    // Opening the copy may create its -wal/-shm; those are removed again afterwards, so the
    // damaged copy is left exactly as it was found.
    let created: Vec<PathBuf> = ["-wal", "-shm"]
        .iter()
        .map(|s| with_suffix(damaged, s))
        .filter(|p| !p.exists())
        .collect();
    let src = Connection::open_with_flags(
        damaged,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        // Lets SQLite read a file shorter than its header says (a truncated store) instead
        // of refusing it whole; harmless on a read-only connection.
        c.pragma_update(None, "writable_schema", true)?;
        Ok(c)
    });
    // Deliveries keep their locations in the log; bodies of an older store go into it.
    log.set_raw_ids(true);
    let report = copy_tables(src, damaged, fresh, log);
    log.set_raw_ids(false);
    match &report {
        Ok(_) => log.settle([]),
        Err(_) => log.rollback(),
    }
    for p in created {
        let _ = std::fs::remove_file(p);
    }
    report
}

fn copy_tables(
    src: rusqlite::Result<Connection>,
    damaged: &Path,
    fresh: &mut Connection,
    log: &mut BodyLog,
) -> rusqlite::Result<Vec<TableRecovery>> {
    let tx = fresh.transaction()?;
    let mut report = Vec::with_capacity(TABLES.len());
    match src {
        Ok(src) => {
            for table in TABLES {
                if table.legacy && !has_table(&src, table) {
                    continue;
                }
                report.push(salvage_table(&src, &tx, table, log));
            }
        }
        Err(e) => {
            log::error!(
                "store: the damaged copy {} cannot be opened: {e}",
                damaged.display()
            );
            report.extend(TABLES.iter().map(|t| TableRecovery::unreadable(t.name)));
        }
    }
    log.flush()
        .and_then(|()| log.sync())
        .map_err(schema::log_error)?;
    tx.commit()?;
    Ok(report)
}

/// Whether the damaged store has `table` (or the older table it replaces), by its schema.
fn has_table(src: &Connection, table: &Table) -> bool {
    [Some(table.name), table.old.map(|(name, _)| name)]
        .into_iter()
        .flatten()
        .any(|name| {
            src.query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |_| Ok(()),
            )
            .is_ok()
        })
}

/// What a seek at a rowid found.
enum Probe {
    /// Rows (or the end of the table) are readable from there.
    Readable,
    Damaged,
}

fn salvage_table(
    src: &Connection,
    dst: &Connection,
    table: &Table,
    log: &mut BodyLog,
) -> TableRecovery {
    let count: Option<u64> = [Some(table.name), table.old.map(|(name, _)| name)]
        .into_iter()
        .flatten()
        .find_map(|name| {
            src.query_row(&format!("SELECT count(*) FROM {name}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .ok()
        })
        .and_then(|n| u64::try_from(n).ok());
    let select = |name: &str, columns: &str| {
        src.prepare(&format!(
            "SELECT rowid, {columns} FROM {name} WHERE rowid >= ?1 ORDER BY rowid"
        ))
    };
    // A store damaged before it was migrated has the table as an older schema made it.
    let prepared = select(table.name, table.columns).or_else(|e| match table.old {
        Some((name, columns)) => select(name, columns),
        None => Err(e),
    });
    let mut stmt = match prepared {
        Ok(s) => s,
        Err(e) => {
            log::error!("store: table {} unreadable: {e}", table.name);
            return TableRecovery::unreadable(table.name);
        }
    };
    let mut tally = schema::Tally::default();
    let mut recovered = 0u64;
    let mut failed = 0u64;
    let mut probes = 0u32;
    // The next rowid to read from; i128 so that stepping past i64::MAX is plain arithmetic.
    let mut from = i128::from(i64::MIN);
    'scan: loop {
        let read_error = {
            let mut rows = match stmt.query([clamp(from)]) {
                Ok(rows) => rows,
                Err(_) => return finish(table, recovered, failed + 1, count),
            };
            loop {
                match rows.next() {
                    Ok(None) => break 'scan,
                    Ok(Some(row)) => {
                        let rowid = match row.get::<_, i64>(0) {
                            Ok(r) => r,
                            Err(_) => break true,
                        };
                        from = i128::from(rowid) + 1;
                        match (table.decode)(row) {
                            // Salvage only adds: nothing is released.
                            Ok(change) => match schema::apply(dst, &change, &mut tally, log) {
                                Ok(()) => recovered += 1,
                                Err(e) => {
                                    log::warn!("store: {} row {rowid} not copied: {e}", table.name);
                                    failed += 1;
                                }
                            },
                            Err(why) => {
                                log::warn!("store: {} row {rowid} invalid: {why}", table.name);
                                failed += 1;
                            }
                        }
                        if from > i128::from(i64::MAX) {
                            break 'scan;
                        }
                    }
                    Err(_) => break true,
                }
            }
        };
        if read_error {
            failed += 1;
            // `from` is damaged: find the first rowid after it where reading works again.
            let mut bad = from;
            let mut step: i128 = 1;
            let good = loop {
                let next = bad + step;
                if next > i128::from(i64::MAX) || probes >= MAX_PROBES {
                    break 'scan;
                }
                probes += 1;
                match probe(&mut stmt, next) {
                    Probe::Readable => break next,
                    Probe::Damaged => {
                        bad = next;
                        step *= 2;
                    }
                }
            };
            let mut good = good;
            while good - bad > 1 && probes < MAX_PROBES {
                probes += 1;
                let mid = bad + (good - bad) / 2;
                match probe(&mut stmt, mid) {
                    Probe::Readable => good = mid,
                    Probe::Damaged => bad = mid,
                }
            }
            from = good;
        }
    }
    finish(table, recovered, failed, count)
}

fn probe(stmt: &mut rusqlite::Statement<'_>, at: i128) -> Probe {
    match stmt.query([clamp(at)]) {
        Ok(mut rows) => match rows.next() {
            Ok(_) => Probe::Readable,
            Err(_) => Probe::Damaged,
        },
        Err(_) => Probe::Damaged,
    }
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn finish(table: &Table, recovered: u64, failed: u64, count: Option<u64>) -> TableRecovery {
    // When the damaged table can still count its rows (often through an intact index), the
    // loss is exact; otherwise only the failed reads and invalid rows are known.
    let (lost, lost_is_exact) = match count {
        Some(n) => (n.saturating_sub(recovered), true),
        None => (failed, false),
    };
    TableRecovery {
        table: table.name,
        recovered,
        lost,
        lost_is_exact,
    }
}

/// Tells whether an error means the file is damaged (as opposed to, say, a full disk or a
/// permission problem, which moving the file aside would not cure).
pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase))
}

/// Convenience for the start-up path: the check SQLite offers without reading every index
/// entry twice. Returns the first problem it reports, if any.
pub(crate) fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(1)")?;
    let mut rows = stmt.query([])?;
    match rows.next()? {
        Some(row) => {
            let msg: String = row.get(0)?;
            Ok(if msg == "ok" { None } else { Some(msg) })
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_files_follow_the_main_file_aside() {
        let dir = std::env::temp_dir().join(format!("midge-store-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("midge.db");
        std::fs::write(&path, b"main").unwrap();
        std::fs::write(with_suffix(&path, "-wal"), b"wal").unwrap();
        let aside = move_aside(&path, 1234).unwrap();
        assert_eq!(aside, dir.join("midge.db.corrupt-1234"));
        assert_eq!(std::fs::read(with_suffix(&aside, "-wal")).unwrap(), b"wal");
        assert!(!path.exists() && !with_suffix(&path, "-wal").exists());
        std::fs::write(&path, b"again").unwrap();
        assert_eq!(
            move_aside(&path, 1234).unwrap(),
            dir.join("midge.db.corrupt-1234.1")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_damage_counts_as_corruption() {
        let conn = Connection::open_in_memory().unwrap();
        let e = conn.execute("SELECT * FROM nowhere", []).unwrap_err();
        assert!(!is_corruption(&e));
    }
}
