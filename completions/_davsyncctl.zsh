#compdef davsyncctl davsyncd
# zsh completion for davsyncctl(1) and davsyncd(1); names come from the
# running daemon (`davsyncctl list`).

_davsyncctl_names() {
  local -a names
  names=(${(f)"$(timeout 5 davsyncctl list "$@" 2>/dev/null)"})
  print -rl -- $names
}

_davsyncctl_accounts() {
  local -a names
  names=(${(f)"$(_davsyncctl_names)"})
  compadd -a names
}

_davsyncctl_command() {
  local -a names
  case $words[1] in
    sync)
      if (( CURRENT == 2 )); then
        _davsyncctl_accounts
      elif (( CURRENT == 3 )); then
        names=(${(f)"$(_davsyncctl_names $words[2])"})
        compadd -a names
      fi ;;
    set-password|list)
      (( CURRENT == 2 )) && _davsyncctl_accounts ;;
    confirm-delete)
      if (( CURRENT == 2 )); then
        if [[ $PREFIX == */* ]]; then
          local account=${PREFIX%%/*}
          names=(${(f)"$(_davsyncctl_names $account)"})
          compadd -p "$account/" -a names
        else
          names=(${(f)"$(_davsyncctl_names)"})
          compadd -S / -a names
        fi
      fi ;;
  esac
}

_davsyncctl() {
  if [[ $service == davsyncd ]]; then
    _arguments \
      '--config[configuration file]:file:_files' \
      '--account[act on this account only]:account:_davsyncctl_accounts' \
      '--discover[list every account'\''s collections and exit]' \
      '--json[with --discover: print JSON]' \
      '--once[sync every account once and exit]' \
      '--force-delete[with --once: apply held-back deletions]' \
      '--debug[log every request]' \
      '--version[print the version]' \
      '--help[print a short help]'
    return
  fi
  local -a commands
  commands=(
    'status:accounts and collections'
    'sync:sync now and wait for the result'
    'watch:print the daemon'\''s events'
    'reload:re-read the configuration'
    'confirm-delete:apply deletions the deletion guard held back'
    'set-password:store an account'\''s password in the Secret Service'
    'list:account or collection ids, one per line'
  )
  _arguments \
    '--json[machine-readable output]' \
    '--no-wait[with sync: do not wait]' \
    '--timeout[with sync: seconds to wait]:seconds:' \
    '--version[print the version]' \
    '--help[print a short help]' \
    '1:command:{_describe command commands}' \
    '*::argument:_davsyncctl_command'
}

_davsyncctl "$@"
