# Shell functions shared by the lab's guest scripts (sourced, not run).

# make_cgroup A/B: creates /sys/fs/cgroup/A/B, enabling the cpu controller on the way down.
make_cgroup() {
    _path=/sys/fs/cgroup
    _rest=$1
    while [ -n "$_rest" ]; do
        _part=${_rest%%/*}
        case $_rest in
            */*) _rest=${_rest#*/} ;;
            *) _rest= ;;
        esac
        _path=$_path/$_part
        [ -d "$_path" ] || mkdir "$_path" || echo "XSCHED-LAB ERROR mkdir $_path" >/dev/console
        if [ -n "$_rest" ]; then
            echo +cpu >"$_path/cgroup.subtree_control" ||
                echo "XSCHED-LAB ERROR +cpu in $_path" >/dev/console
        fi
    done
}

# move_to_cgroup PID A/B: creates the group if needed and moves PID into it ("-" = the root group).
move_to_cgroup() {
    if [ "$2" = - ]; then
        echo "$1" >/sys/fs/cgroup/cgroup.procs
    else
        make_cgroup "$2"
        echo "$1" >"/sys/fs/cgroup/$2/cgroup.procs"
    fi
}
