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
complete -c davsyncctl -n "__fish_seen_subcommand_from sync set-password list" -a '(timeout 5 davsyncctl list 2>/dev/null)' -d account
complete -c davsyncctl -n "__fish_seen_subcommand_from confirm-delete" -a '(for a in (timeout 5 davsyncctl list 2>/dev/null); for c in (timeout 5 davsyncctl list $a 2>/dev/null); echo $a/$c; end; end)'
