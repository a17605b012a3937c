#!/usr/bin/env bash
# Real coding-agent CLIs for the agents tests, sourced by .ci/run (`. .ci/agents.sh`).
# Codex CLI, Claude Code and Gemini CLI from npm, mini-swe-agent from PyPI into its own venv;
# everything cached under ~/.cache/necrocode/agents/<name>-<version>/ (outside the clone), so a
# second run installs nothing. Exports NECROCODE_AGENT_<NAME>=<executable> for each CLI and
# NECROCODE_AGENTS_REQUIRED=1, which makes the agents tests fail instead of skip when one is absent.
CODEX_VERSION=0.171.0
CLAUDE_VERSION=2.1.332
GEMINI_VERSION=0.61.0
MINI_VERSION=2.4.6
AGENTS_CACHE="${NECROCODE_AGENTS_CACHE:-$HOME/.cache/necrocode/agents}"

_agents_npm() {  # package version bin -> path of the installed executable
  local pkg=$1 version=$2 bin=$3
  local dir="$AGENTS_CACHE/${bin}-${version}"
  if [ ! -x "$dir/node_modules/.bin/$bin" ]; then
    command -v npm >/dev/null 2>&1 || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    }
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    # errexit does not reach into $(...): every step says its own failure
    npm install --prefix "$dir.tmp" --no-audit --no-fund --loglevel=error "$pkg@$version" >&2 \
      || { echo "npm install $pkg@$version failed" >&2; return 1; }
    [ -x "$dir.tmp/node_modules/.bin/$bin" ] || { echo "$pkg installed no $bin" >&2; return 1; }
    rm -rf "$dir" && mv "$dir.tmp" "$dir" || return 1
  fi
  printf '%s\n' "$dir/node_modules/.bin/$bin"
}

_agents_mini() {  # its own venv (not the test venv); .complete marks a finished install
  local dir="$AGENTS_CACHE/mini-swe-agent-$MINI_VERSION"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m venv "$dir/venv" || return 1
    "$dir/venv/bin/pip" install -q "mini-swe-agent==$MINI_VERSION" 2>&1 \
      | grep -v '^WARNING: Location' >&2 || true
    [ -x "$dir/venv/bin/mini" ] || { echo "mini-swe-agent did not install" >&2; return 1; }
    # compiled once: its litellm import is most of a run's start-up
    "$dir/venv/bin/python" -m compileall -q "$dir/venv/lib" >/dev/null 2>&1 || true
    touch "$dir/.complete"
  fi
  printf '%s\n' "$dir/venv/bin/mini"
}

echo "=== agent CLIs (cache: $AGENTS_CACHE)"
NECROCODE_AGENT_CODEX=$(_agents_npm @openai/codex "$CODEX_VERSION" codex)
NECROCODE_AGENT_CLAUDE=$(_agents_npm @anthropic-ai/claude-code "$CLAUDE_VERSION" claude)
NECROCODE_AGENT_GEMINI=$(_agents_npm @google/gemini-cli "$GEMINI_VERSION" gemini)
NECROCODE_AGENT_MINI=$(_agents_mini)
export NECROCODE_AGENT_CODEX NECROCODE_AGENT_CLAUDE NECROCODE_AGENT_GEMINI NECROCODE_AGENT_MINI
export NECROCODE_AGENTS_REQUIRED=1
for _cli in "$NECROCODE_AGENT_CODEX" "$NECROCODE_AGENT_CLAUDE" "$NECROCODE_AGENT_GEMINI" \
    "$NECROCODE_AGENT_MINI"; do
  echo "  $_cli"
done
unset _cli
