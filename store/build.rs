// `sqlx::migrate!` embeds the migrations at compile time; without this a new
// migration file would not rebuild the crate and silently not be applied.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
