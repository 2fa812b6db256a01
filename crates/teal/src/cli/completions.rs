//! `teal completions SHELL`: the shell's completion script for every verb and flag.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Where each shell looks for the script, shown by `teal completions --help`.
pub(crate) const INSTALL: &str = "\
Install the script where your shell looks for completions, then start a new shell:
  bash  teal completions bash > ~/.local/share/bash-completion/completions/teal
  zsh   teal completions zsh > ~/.zfunc/_teal
        (with `fpath+=~/.zfunc` before `compinit` in ~/.zshrc)
  fish  teal completions fish > ~/.config/fish/completions/teal.fish";

pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    // Written whole, so a closed pipe is an error to report rather than a panic mid-script.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "teal", &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("cannot write the completion script to standard output")
}
