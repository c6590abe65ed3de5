# bash completion for davsyncctl(1) and davsyncd(1).
# Account and collection names come from the running daemon (`davsyncctl
# list`). They are partly chosen by the server, so they are matched in a
# loop and never handed to compgen -W, which would expand them as shell
# words ($(...) included).

# Adds the lines of $1 that start with $cur to COMPREPLY, each with suffix $2.
_davsyncctl_add_matching() {
    local name
    while IFS= read -r name; do
        [[ -n $name && $name == "$cur"* ]] && COMPREPLY+=("$name$2")
    done <<<"$1"
}

# The names the daemon knows: `davsyncctl list [ACCOUNT]`, quietly, and
# never waiting long for a daemon that does not answer.
_davsyncctl_names() {
    local ctl=davsyncctl
    [[ ${COMP_WORDS[0]} == */davsyncctl ]] && ctl=${COMP_WORDS[0]}
    timeout 5 "$ctl" list "$@" 2>/dev/null
}

_davsyncctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local commands="status sync watch reload confirm-delete set-password list"
    local options="--json --no-wait --timeout --help --version"
    COMPREPLY=()
    [[ $prev == --timeout ]] && return 0

    local i word cmd= args=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --timeout) ((i++)) ;;
            -*) ;;
            *) if [[ -z $cmd ]]; then cmd=$word; else args+=("$word"); fi ;;
        esac
    done

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
        return 0
    fi
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return 0
    fi
    case $cmd in
        sync)
            if ((${#args[@]} == 0)); then
                _davsyncctl_add_matching "$(_davsyncctl_names)" ""
            elif ((${#args[@]} == 1)); then
                _davsyncctl_add_matching "$(_davsyncctl_names "${args[0]}")" ""
            fi
            ;;
        set-password | list)
            ((${#args[@]} == 0)) && _davsyncctl_add_matching "$(_davsyncctl_names)" ""
            ;;
        confirm-delete)
            ((${#args[@]} == 0)) || return 0
            if [[ $cur == */* ]]; then
                local account=${cur%%/*} name
                while IFS= read -r name; do
                    [[ -n $name && "$account/$name" == "$cur"* ]] && COMPREPLY+=("$account/$name")
                done <<<"$(_davsyncctl_names "$account")"
            else
                _davsyncctl_add_matching "$(_davsyncctl_names)" "/"
                compopt -o nospace 2>/dev/null
            fi
            ;;
    esac
    return 0
}

_davsyncd() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    COMPREPLY=()
    case $prev in
        --config)
            if declare -F _filedir >/dev/null; then _filedir; else COMPREPLY=($(compgen -f -- "$cur")); fi
            return 0
            ;;
        --account)
            _davsyncctl_add_matching "$(_davsyncctl_names)" ""
            return 0
            ;;
    esac
    COMPREPLY=($(compgen -W "--config --account --discover --json --once --force-delete --debug --version --help" -- "$cur"))
    return 0
}

complete -F _davsyncctl davsyncctl
complete -F _davsyncd davsyncd
