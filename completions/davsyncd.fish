# fish completion for davsyncd(1); account names come from the running daemon.
complete -c davsyncd -f
complete -c davsyncd -l config -r -F -d 'configuration file'
complete -c davsyncd -l account -x -a '(timeout 5 davsyncctl list 2>/dev/null)' -d 'act on this account only'
complete -c davsyncd -l discover -d "list every account's collections and exit"
complete -c davsyncd -l json -d 'with --discover: print JSON'
complete -c davsyncd -l once -d 'sync every account once and exit'
complete -c davsyncd -l force-delete -d 'with --once: apply held-back deletions'
complete -c davsyncd -l debug -d 'log every request'
complete -c davsyncd -l version -d 'print the version'
complete -c davsyncd -l help -d 'print a short help'
