# Sourced by the other scripts: sets PY to the interpreter tralgo runs in.
#   $PYTHON set          -> that interpreter, as it is (you manage its packages, e.g. a CUDA torch);
#   inside a virtualenv  -> that virtualenv's python;
#   otherwise            -> the project's own virtualenv .venv (created here), because a stock
#                           Debian/Ubuntu python refuses `pip install` outside one (PEP 668).
project_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then echo "$VIRTUAL_ENV/bin/python"; return; fi
  local venv="$PWD/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    local base=python3
    command -v "$base" >/dev/null || { echo "python3 not found: install Python >= 3.10" >&2; return 1; }
    if ! "$base" -m venv "$venv" >&2; then
      rm -rf "$venv"
      # Debian/Ubuntu ship venv's pip bootstrap in a separate package.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing python3-venv (Debian package) to create $venv ..." >&2
        pyver=$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        (apt-get install -y -q python3-venv "python$pyver-venv" >/dev/null 2>&1 \
          || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q python3-venv "python$pyver-venv" >/dev/null 2>&1)) \
          || { echo "could not install python3-venv with apt-get" >&2; return 1; }
        "$base" -m venv "$venv" >&2 || { rm -rf "$venv"; return 1; }
      else
        echo "cannot create a virtualenv: run 'sudo apt-get install python3-venv' (Debian/Ubuntu), or set PYTHON=/path/to/python of an environment you manage" >&2
        return 1
      fi
    fi
  fi
  echo "$venv/bin/python"
}
