// `sqlx::migrate!` embeds ./migrations at compile time; without this, cargo would not rebuild
// the crate when a migration is added or edited, and a binary would ship stale migrations.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
