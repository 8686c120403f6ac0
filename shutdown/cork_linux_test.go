//go:build linux

package shutdown

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// segsIn returns how many TCP segments c has received, from the kernel's TCP_INFO.
func segsIn(t *testing.T, p *testPeer) uint32 {
	rc, err := p.tcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if ierr != nil {
		t.Fatalf("TCP_INFO: %v", ierr)
	}
	return info.Segs_in
}

// TestCloseNotifyLeavesWithFIN: the client's goodbye, close_notify then FIN, reaches the peer
// in one TCP segment (counted by the peer's kernel), and the teardown is clean as ever.
func TestCloseNotifyLeavesWithFIN(t *testing.T) {
	checkFDs(t)
	baselineNow, baselineTaken := make(chan struct{}), make(chan struct{})
	var goodbyeSegs uint32
	lb := newLoopback(t, loopbackOptions{}, func(p *testPeer) {
		<-baselineNow
		before := segsIn(t, p)
		close(baselineTaken)
		p.readUntilClose()
		p.watchEnd()
		goodbyeSegs = segsIn(t, p) - before
		p.closeNotify()
		p.fin()
	})
	// Let the client's ACKs of the handshake's last flight (the session ticket) go out
	// before the count starts: only the goodbye is counted.
	time.Sleep(100 * time.Millisecond)
	close(baselineNow)
	<-baselineTaken
	r := Run(t.Context(), lb.job(Graceful, 0))
	rep := lb.wantReport(t)
	wantRecord(t, r, Record{Outcome: Clean, CloseNotifySent: true, CloseNotifyReceived: true, FINSent: true, FINReceived: true})
	wantPeer(t, rep, peerReport{CloseNotify: true, End: "fin"})
	if goodbyeSegs != 1 {
		t.Errorf("segments the peer received for close_notify and FIN: got %d, want 1", goodbyeSegs)
	}
}
