#!/bin/sh
# vfabric test guest: command agent on /dev/ttyS1 (the host's end is a unix socket).
#
# Protocol, one line each way (the host sends "\n"-terminated lines):
#   host -> guest  CMD <id> <base64 of a shell script>   run it, wait, then reply:
#   guest -> host  <base64 of stdout+stderr, 76-column lines>
#                  END <id> <exit code>
#   host -> guest  BG <id> <base64 of a shell script>    start it in the background, reply at once
#   guest -> host  END <id> 0                            (output in /tmp/bg-<id>.log, pid in /tmp/bg-<id>.pid)
#   host -> guest  PING <id>
#   guest -> host  PONG <id>
# Lines the agent does not understand are ignored. Announces itself with "AGENT READY".
tty=/dev/ttyS1
exec 0<>"$tty" 1>&0 2>/dev/console
stty raw -echo || echo "VFGUEST agent: stty failed" >&2

echo "AGENT READY"
while read -r kind id b64; do
  case "$id" in *[!0-9]*|'') continue ;; esac
  case "$kind" in
    CMD)
      script="/tmp/vf-cmd-$id.sh"
      printf '%s\n' "$b64" | base64 -d >"$script"
      sh "$script" >"/tmp/vf-out-$id" 2>&1 </dev/null
      rc=$?
      base64 "/tmp/vf-out-$id"
      echo "END $id $rc"
      rm -f "$script" "/tmp/vf-out-$id"
      ;;
    BG)
      script="/tmp/bg-$id.sh"
      printf '%s\n' "$b64" | base64 -d >"$script"
      setsid sh "$script" >"/tmp/bg-$id.log" 2>&1 </dev/null &
      echo $! >"/tmp/bg-$id.pid"
      echo "END $id 0"
      ;;
    PING)
      echo "PONG $id"
      ;;
  esac
done
echo "VFGUEST agent: read failed" >&2
