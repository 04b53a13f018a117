//! The migrations are embedded in the binary at compile time (`sqlx::migrate!`); a new or changed
//! migration file must rebuild it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
