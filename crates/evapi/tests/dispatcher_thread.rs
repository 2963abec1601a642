//! With `workers = 0` the dispatcher thread runs the event socket's own
//! runtime. Alone in its test binary (its own process), so that counting
//! the process's `evapi-dispatcher` threads counts this socket's only.

mod common;

use common::*;
use evapi::Event;
use std::sync::Arc;

/// Threads of this process whose name starts with `evapi-dispatche` (the
/// kernel keeps 15 characters of a thread's name).
fn dispatcher_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("evapi-dispatche"))
        .count()
}

/// Dropped without `shutdown`, a socket with `workers = 0` still lets its
/// dispatcher thread end once its last connection has closed: no thread
/// is left waiting for connections that can no longer come.
#[tokio::test]
async fn a_dropped_socket_leaves_no_dispatcher_thread_behind() {
    let rec = Arc::new(Recorder::new());
    let socket = start_dispatcher_only(rec.clone()).await;
    // A new thread names itself as it starts.
    eventually("the dispatcher thread", || dispatcher_threads() == 1).await;
    let mut client = TestClient::connect(socket.local_addr()).await;
    rec.wait_for(Event::ConnectionNew, 1).await;
    drop(socket);
    // The drop closes the client; the thread ends after its connection.
    client.expect_closed().await;
    rec.wait_for(Event::ConnectionClosed, 1).await;
    eventually("the dispatcher thread to end", || dispatcher_threads() == 0).await;
}
