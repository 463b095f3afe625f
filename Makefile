# `make install` puts xsched where its defaults look for it (DESTDIR and PREFIX as usual):
#   $(PREFIX)/bin/xsched, the bundled policies in $(PREFIX)/lib/xsched/plugins, the kernel
#   profiles in $(PREFIX)/share/xsched/kernels, the systemd unit, and /etc/xsched/xsched.toml
#   (and the policies' example configurations) unless they exist.
PREFIX ?= /usr
DESTDIR ?=
CARGO ?= cargo
UNITDIR ?= /lib/systemd/system
POLICIES := priority fairshare idle

.PHONY: build install uninstall
build:
	$(CARGO) build --release -p xsched $(POLICIES:%=-p %)

install: build
	install -Dm755 target/release/xsched $(DESTDIR)$(PREFIX)/bin/xsched
	for p in $(POLICIES); do install -Dm644 target/release/lib$$p.so $(DESTDIR)$(PREFIX)/lib/xsched/plugins/lib$$p.so; done
	install -d $(DESTDIR)$(PREFIX)/share/xsched/kernels $(DESTDIR)$(PREFIX)/share/doc/xsched
	install -m644 kernels/*.json $(DESTDIR)$(PREFIX)/share/xsched/kernels/
	install -m644 README.md $(DESTDIR)$(PREFIX)/share/doc/xsched/
	for p in $(POLICIES); do install -m644 plugins/$$p/$$p.toml $(DESTDIR)$(PREFIX)/share/doc/xsched/; done
	install -Dm644 dist/xsched.service $(DESTDIR)$(UNITDIR)/xsched.service
	install -d $(DESTDIR)/etc/xsched
	[ -e $(DESTDIR)/etc/xsched/xsched.toml ] || install -m644 dist/xsched.toml $(DESTDIR)/etc/xsched/xsched.toml
	[ -e $(DESTDIR)/etc/xsched/priority.toml ] || install -m644 plugins/priority/priority.toml $(DESTDIR)/etc/xsched/priority.toml

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/xsched $(DESTDIR)$(UNITDIR)/xsched.service
	rm -rf $(DESTDIR)$(PREFIX)/lib/xsched $(DESTDIR)$(PREFIX)/share/xsched $(DESTDIR)$(PREFIX)/share/doc/xsched
