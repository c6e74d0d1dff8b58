"""The manual pages say what the commands' --help says: every long option a --help text names
is in the page, and the page names no option that --help does not know (a stale page), for
dynconv (each command) and dynconv-export; and dynconv(1) lists every command.

    man_pages.py DYNCONV_BINARY SOURCE_DIR
"""

import os
import re
import subprocess
import sys

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")


def roff_text(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # Comment lines say nothing to the reader; \- is a plain hyphen in roff.
    text = "\n".join(line for line in text.splitlines() if not line.startswith('.\\"'))
    # Examples may run other commands (dynconv-export(1) shows `dynconv run`): not compared.
    text = re.sub(r"^\.SH EXAMPLES\n.*?(?=^\.SH )", "", text, flags=re.M | re.S)
    return re.sub(r"\\f[BIRP]", "", text.replace("\\-", "-").replace("\\&", ""))


def help_text(command, env=None):
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return out.stdout


def compare(name, helps, page):
    problems = []
    in_help = set(OPTION.findall("\n".join(helps)))
    in_page = set(OPTION.findall(page))
    for option in sorted(in_help - in_page):
        problems.append(f"{name}(1) does not describe {option}")
    for option in sorted(in_page - in_help):
        problems.append(f"{name}(1) describes {option}, which --help does not know")
    print(f"{name}: {len(in_help)} options in --help, {len(in_page)} in the page")
    return problems


def main(argv):
    dynconv, source = argv[1], argv[2]
    problems = []

    main_help = help_text([dynconv, "--help"])
    commands = re.findall(r"^  ([a-z]+)  ", main_help.split("Commands:", 1)[1], re.M)
    if not commands:
        problems.append("dynconv --help lists no commands")
    helps = [main_help] + [help_text([dynconv, c, "--help"]) for c in commands]
    page = roff_text(os.path.join(source, "man", "dynconv.1"))
    for c in commands:
        if not re.search(rf"^\.B dynconv {c}\b", page, re.M):
            problems.append(f"dynconv(1) has no synopsis of 'dynconv {c}'")
        if not re.search(rf"^\.B {c}\n", page, re.M):
            problems.append(f"dynconv(1) does not describe the command {c}")
    problems += compare("dynconv", helps, page)

    env = dict(os.environ, PYTHONPATH=os.path.join(source, "python"))
    export_help = help_text([sys.executable, "-m", "dynconv.export", "--help"], env)
    page = roff_text(os.path.join(source, "man", "dynconv-export.1"))
    problems += compare("dynconv-export", [export_help], page)
    for metavar in re.findall(r"[A-Z]+\.[a-z]+", export_help.splitlines()[0]):
        if metavar not in page:
            problems.append(f"dynconv-export(1) does not name {metavar}")

    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
