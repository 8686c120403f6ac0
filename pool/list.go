package pool

import "time"

// link is one pair of list pointers inside a [Conn].
type link[K comparable, C any] struct{ prev, next *Conn[K, C] }

// connList is an intrusive doubly linked list of connections. Intrusive, so that moving a
// connection between lists allocates nothing. A connection is on at most two lists at
// once: the pool's idle list (through Conn.glink) and one list of its key, idle or shared
// (through Conn.klink); it is never idle and shared at the same time.
type connList[K comparable, C any] struct {
	head, tail *Conn[K, C]
	len        int
	global     bool // links through Conn.glink, else through Conn.klink
}

func (l *connList[K, C]) links(c *Conn[K, C]) *link[K, C] {
	if l.global {
		return &c.glink
	}
	return &c.klink
}

// pushFront makes c the head of l.
func (l *connList[K, C]) pushFront(c *Conn[K, C]) {
	lc := l.links(c)
	lc.prev, lc.next = nil, l.head
	if l.head != nil {
		l.links(l.head).prev = c
	} else {
		l.tail = c
	}
	l.head = c
	l.len++
}

// remove takes c, which must be on l, off l.
func (l *connList[K, C]) remove(c *Conn[K, C]) {
	lc := l.links(c)
	if lc.prev != nil {
		l.links(lc.prev).next = lc.next
	} else {
		l.head = lc.next
	}
	if lc.next != nil {
		l.links(lc.next).prev = lc.prev
	} else {
		l.tail = lc.prev
	}
	lc.prev, lc.next = nil, nil
	l.len--
}

// lifeHeap is a min-heap of connections by the end of their lifetime, for container/heap.
// Conn.heapIndex is each connection's position, or -1 when it is not on the heap.
type lifeHeap[K comparable, C any] []*Conn[K, C]

func (h lifeHeap[K, C]) Len() int           { return len(h) }
func (h lifeHeap[K, C]) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h lifeHeap[K, C]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}

func (h *lifeHeap[K, C]) Push(x any) {
	c := x.(*Conn[K, C])
	c.heapIndex = len(*h)
	*h = append(*h, c)
}

func (h *lifeHeap[K, C]) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.heapIndex = -1
	return c
}

// next returns the earliest end of a lifetime, or the zero time if the heap is empty.
func (h lifeHeap[K, C]) next() time.Time {
	if len(h) == 0 {
		return time.Time{}
	}
	return h[0].expires
}
