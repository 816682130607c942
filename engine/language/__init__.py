"""The campaign language: the TOML configuration and its checks (`config`), the `where`
expressions over profile attributes (`where`), and their compilation into the core's
tables (`compile`)."""
