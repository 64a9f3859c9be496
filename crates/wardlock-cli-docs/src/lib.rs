//! Man pages and shell completions written from a program's own clap definition, so they
//! never drift from what it accepts. Each program, run as `PROGRAM generate-docs DIR`,
//! writes its own (`make packages` does that; the packages ship what it writes). It is
//! no subcommand of the program, so `--help` does not show it.

use std::io;
use std::path::Path;

use clap_complete::Shell;

/// When the program was run as `PROGRAM generate-docs DIR`, writes its docs into DIR and
/// exits; otherwise returns, and the program runs as usual.
pub fn generate_if_asked<C: clap::CommandFactory>() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "generate-docs") {
        let Some(dir) = args.next() else {
            eprintln!("generate-docs: name the folder to write the man pages and completions into");
            std::process::exit(2);
        };
        match write(C::command(), Path::new(&dir)) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("generate-docs: {}: {e}", Path::new(&dir).display());
                std::process::exit(1);
            }
        }
    }
}

/// Writes `man1/NAME.1` (and `NAME-SUBCOMMAND.1` for each subcommand), and completions for
/// bash, zsh and fish under `completions/`, into `dir`.
pub fn write(command: clap::Command, dir: &Path) -> io::Result<()> {
    let mut command = command;
    command.build();
    let name = command.get_name().to_owned();
    let man = dir.join("man1");
    std::fs::create_dir_all(&man)?;
    write_man(&command, &name, &man)?;
    let completions = dir.join("completions");
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let out = completions.join(shell.to_string());
        std::fs::create_dir_all(&out)?;
        clap_complete::generate_to(shell, &mut command.clone(), &name, &out)?;
    }
    Ok(())
}

fn write_man(command: &clap::Command, page: &str, dir: &Path) -> io::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone().name(page.to_owned())).render(&mut out)?;
    std::fs::write(dir.join(format!("{page}.1")), out)?;
    // clap's own `help` subcommand has no page of its own; `PROGRAM help X` is `X --help`.
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_man(sub, &format!("{page}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_subcommand_gets_a_page_and_every_shell_a_completion() {
        let command = clap::Command::new("tool")
            .about("A tool")
            .subcommand(clap::Command::new("run").about("Runs").subcommand(clap::Command::new("fast")))
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = std::env::temp_dir().join(format!("wardlock-cli-docs-{}", std::process::id()));
        write(command, &dir).expect("written");
        for page in ["tool.1", "tool-run.1", "tool-run-fast.1"] {
            let text = std::fs::read_to_string(dir.join("man1").join(page)).expect(page);
            assert!(text.contains(".TH"), "{page}");
        }
        assert!(!dir.join("man1/tool-secret.1").exists(), "a hidden command has no page");
        assert!(!dir.join("man1/tool-help.1").exists(), "nor clap's help");
        assert!(dir.join("completions/bash/tool.bash").exists());
        assert!(dir.join("completions/zsh/_tool").exists());
        assert!(dir.join("completions/fish/tool.fish").exists());
        std::fs::remove_dir_all(&dir).expect("cleaned");
    }
}
