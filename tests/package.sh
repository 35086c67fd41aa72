#!/bin/sh
# Installed paths agree with each other and with the docs: this build's `make install`,
# the packaged layout (--prefix=/usr --sysconfdir=/etc), and the Debian package (TAP).
set -u
: "${srcdir:=.}" "${top_builddir:=.}"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mistrald-package.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
diag() { sed 's/^/# /' "$@"; }

# check_layout ROOT DESC [data]: the unit's ExecStart binary (unless only data files
# were installed) and --config file are under ROOT, the daemon's own default is that
# file, and both man pages name it.
check_layout() {
	root=$1 desc=$2 data=${3:-}
	unit=$(find "$root" -name mistrald.service | head -n 1)
	exec_line=$(grep '^ExecStart=' "$unit" 2>/dev/null)
	bin=$(echo "$exec_line" | sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p')
	conf=$(echo "$exec_line" | sed -n 's/.* --config \([^ ]*\).*/\1/p')
	ok $([ -n "$bin" ] && { [ -n "$data" ] || [ -x "$root$bin" ]; } && [ -n "$conf" ] && [ -f "$root$conf" ]
		echo $?) "$desc: mistrald.service runs $bin --config $conf, ${data:+the latter }installed"
	if [ -z "$data" ]; then
		"$root$bin" --help >"$tmp/help" 2>&1
		ok $(grep -qF "[$conf]" "$tmp/help"; echo $?) "$desc: mistrald's default configuration is $conf"
	else
		skip "$desc: the daemon's own default (a data-only install)"
	fi
	for page in mistrald.8 mistrald.conf.5; do
		f=$(find "$root" -name "$page" -o -name "$page.gz" | head -n 1)
		case "$f" in
		*.gz) gzip -dc "$f" >"$tmp/page" ;;
		*) cat "$f" >"$tmp/page" 2>/dev/null ;;
		esac
		ok $(grep -qF "$conf" "$tmp/page" && ! grep -q '@[a-z]*dir@' "$tmp/page"; echo $?) \
			"$desc: $page names $conf, no @dir@ left"
	done
	sock_unit=$(find "$root" -name mistrald.socket | head -n 1)
	ok $([ "$(dirname "$sock_unit")" = "$(dirname "$unit")" ]; echo $?) \
		"$desc: mistrald.socket beside mistrald.service (${unit#"$root"})"
}

# ---- (a) this build, as configured ----------------------------------------------
if make -C "$top_builddir" -s install DESTDIR="$tmp/a" >"$tmp/a.log" 2>&1; then
	check_layout "$tmp/a" "make install"
else
	ok 1 "make install DESTDIR=... in this build"
	diag "$tmp/a.log"
fi

# ---- (b) the system layout the README shows, data files and configuration only (no compiling) --
mkdir -p "$tmp/b-build"
if (cd "$tmp/b-build" && "$(cd "$srcdir" && pwd)/configure" -q --prefix=/usr --sysconfdir=/etc \
	--localstatedir=/var --with-systemdsystemunitdir=/lib/systemd/system >"$tmp/b.log" 2>&1 &&
	make -s install-data install-dist_sysconfDATA DESTDIR="$tmp/b" >>"$tmp/b.log" 2>&1); then
	check_layout "$tmp/b" "--prefix=/usr --sysconfdir=/etc" data
	ok $(grep -q '^ExecStart=/usr/sbin/mistrald --config /etc/mistrald.conf$' \
		"$tmp/b/lib/systemd/system/mistrald.service"; echo $?) \
		"--prefix=/usr --sysconfdir=/etc: the unit says /usr/sbin/mistrald --config /etc/mistrald.conf"
else
	ok 1 "configure --prefix=/usr --sysconfdir=/etc and make install-data"
	diag "$tmp/b.log"
fi

# ---- (c) the Debian package -------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
if [ ! -f "$srcdir/debian/control" ]; then
	skip "Debian package: no debian/ in this source tree"
elif ! have dpkg-buildpackage || ! have dh; then
	skip "Debian package: dpkg-buildpackage or debhelper not installed (apt-get install debhelper)"
elif "$top_builddir/config.status" --config 2>/dev/null | grep -q sanitizers; then
	# the same package either way; building it once per test run is enough
	skip "Debian package: built by the run without sanitizers"
else
	# A copy of the source without build trees: dpkg-buildpackage builds in place.
	mkdir -p "$tmp/src"
	(cd "$srcdir" && tar -cf - --exclude=./build --exclude=./.git --exclude=./autom4te.cache \
		--exclude='*.o' --exclude='*.a' .) | (cd "$tmp/src" && tar -xf -)
	(cd "$tmp/src" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b) \
		>"$tmp/deb.log" 2>&1
	rc=$?
	deb=$(ls "$tmp"/mistrald_*.deb 2>/dev/null | head -n 1)
	ok $([ $rc -eq 0 ] && [ -n "$deb" ]; echo $?) "dpkg-buildpackage -us -uc -b builds ${deb##*/}"
	[ $rc -eq 0 ] || tail -n 30 "$tmp/deb.log" | diag
	if [ -n "$deb" ]; then
		dpkg-deb -x "$deb" "$tmp/root"
		dpkg-deb -e "$deb" "$tmp/control"
		check_layout "$tmp/root" "the package"
		ok $(grep -qx '/etc/mistrald.conf' "$tmp/control/conffiles" 2>/dev/null; echo $?) \
			"the package: /etc/mistrald.conf is a conffile"
		missing=""
		for f in usr/sbin/mistrald usr/bin/mistralctl usr/bin/mistral-run usr/bin/mistral-bench \
			usr/bin/mistral-mkmodel usr/lib/sysusers.d/mistrald.conf usr/lib/tmpfiles.d/mistrald.conf \
			usr/share/doc/mistrald/99-mistrald-hugepages.conf.example usr/share/man/man7/mistrald-protocol.7.gz; do
			[ -e "$tmp/root/$f" ] || missing="$missing $f"
		done
		ok $([ -z "$missing" ]; echo $?) "the package holds the programs, sysusers/tmpfiles snippets, docs${missing:+ (missing:$missing)}"
		# the user exists before tmpfiles gives it /var/lib/mistrald
		ok $(awk '/systemd-sysusers/ { u = NR } /systemd-tmpfiles/ { t = NR } END { exit !(u && t && u < t) }' \
			"$tmp/control/postinst"; echo $?) "the package: postinst creates the user, then its directory"
		"$tmp/root/usr/sbin/mistrald" --config "$tmp/root/etc/mistrald.conf" \
			--model "$srcdir/tests/data/stories260K.gguf" --check-config >"$tmp/check" 2>&1
		ok $? "the packaged mistrald --check-config runs with the packaged configuration file"
		if have systemd-analyze; then
			# the units as packaged, their ExecStart pointed into the unpacked root
			mkdir -p "$tmp/units"
			sed "s|^ExecStart=/usr/sbin/|ExecStart=$tmp/root/usr/sbin/|" \
				"$tmp/root/lib/systemd/system/mistrald.service" >"$tmp/units/mistrald.service"
			cp "$tmp/root/lib/systemd/system/mistrald.socket" "$tmp/units/"
			systemd-analyze verify --man=no "$tmp/units/mistrald.socket" "$tmp/units/mistrald.service" \
				>"$tmp/verify" 2>&1
			ok $? "systemd-analyze verify accepts the packaged units"
			diag "$tmp/verify"
		else
			skip "systemd-analyze not installed"
		fi
		if have lintian; then
			lintian "$deb" >"$tmp/lintian" 2>&1
			ok $(! grep -q '^E:' "$tmp/lintian"; echo $?) "lintian: no errors"
			diag "$tmp/lintian"
		else
			skip "lintian not installed"
		fi
	fi
fi

echo "1..$n"
[ "$fails" -eq 0 ]
