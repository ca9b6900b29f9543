//! The control listener shared by the bench's own servers: accepts runner connections on a
//! Unix socket and hands every parsed [`RouteCommand`] to the server's callback.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;

use super::routes::RouteCommand;

/// Serves control on `path` from a background thread; `apply` runs for each command.
pub fn listen<F>(path: &Path, apply: F) -> io::Result<JoinHandle<()>>
where
    F: Fn(RouteCommand) + Send + Sync + 'static,
{
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let apply = std::sync::Arc::new(apply);
    std::thread::Builder::new()
        .name("bench-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let apply = apply.clone();
                std::thread::spawn(move || {
                    let Ok(mut writer) = conn.try_clone() else {
                        return;
                    };
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { return };
                        let answer = match RouteCommand::parse(&line) {
                            Some(c) => {
                                apply(c);
                                "ok\n".to_string()
                            }
                            None => format!("error: cannot parse {line:?}\n"),
                        };
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        })
}
