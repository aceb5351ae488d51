//! The HTTP floor for benchmarks: a bare warp 0.4 route answering 200 with nothing behind
//! it, served the same way as authd's listeners would be by `warp::serve`. `bench/run`
//! measures authd's figures as ratios against this, in the same run.
//!
//! `cargo run --release --example floor -- 127.0.0.1:9090`

use std::net::SocketAddr;

use warp::Filter;

#[tokio::main]
async fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    let route = warp::path!("v1" / "verify").map(warp::reply);
    println!("floor listening on {addr}");
    warp::serve(route).run(addr).await;
}
