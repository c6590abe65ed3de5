# fish completion for davsyncctl(1); names come from the running daemon.
set -l commands status sync watch reload confirm-delete set-password list
complete -c davsyncctl -f
complete -c davsyncctl -l json -d 'machine-readable output'
complete -c davsyncctl -l no-wait -d 'with sync: do not wait'
complete -c davsyncctl -l timeout -x -d 'with sync: seconds to wait'
complete -c davsyncctl -l version -d 'print the version'
complete -c davsyncctl -l help -d 'print a short help'
complete -c davsyncctl -n "not __fish_seen_subcommand_from $commands" -a status -d 'accounts and collections'
complete -c davsyncctl -n "not __fish_seen_subcommand_from $commands" -a sync -d 'sync now and wait'
complete -c davsyncctl -n "not __fish_seen_subcommand_from $commands" -a watch -d "print the daemon's events"
complete -c davsyncctl -n "not __fish_seen_subcommand_from $commands" -a reload -d 're-read the configuration'
complete -c davsyncctl -n "not __fish_seen_subcommand_from $commands" -a confirm-delete -d 'apply held-back deletions'
complete -c davsyncctl -n "not __fish_seen_subcommand_from $commands" -a set-password -d 'store a password in the Secret Service'
complete -c davsyncctl -n "not __fish_seen_subcommand_from $commands" -a list -d 'account or collection ids'

# The names the daemon knows for the argument being typed: accounts, then
# (sync) an account's collections, or ACCOUNT/COLLECTION for confirm-delete.
function __davsyncctl_names
    set -l args
    set -l skip 0
    for t in (commandline -opc)[2..-1]
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $t
            case --timeout
                set skip 1
            case '-*'
            case '*'
                set -a args $t
        end
    end
    set -l n (count $args)
    switch "$args[1]"
        case sync
            if test $n -eq 1
                timeout 5 davsyncctl list 2>/dev/null
            else if test $n -eq 2
                timeout 5 davsyncctl list $args[2] 2>/dev/null
            end
        case set-password list
            test $n -eq 1; and timeout 5 davsyncctl list 2>/dev/null
        case confirm-delete
            if test $n -eq 1
                for a in (timeout 5 davsyncctl list 2>/dev/null)
                    for c in (timeout 5 davsyncctl list $a 2>/dev/null)
                        echo $a/$c
                    end
                end
            end
    end
end
complete -c davsyncctl -n "__fish_seen_subcommand_from $commands" -a '(__davsyncctl_names)'
