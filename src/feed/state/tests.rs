use super::*;
use crate::domain::JobData;

mod model;

const ACK: Duration = Duration::from_secs(10);

fn job(id: &str) -> Job {
    with_nonce(id, &format!("nonce-{id}"))
}

fn with_nonce(id: &str, nonce: &str) -> Job {
    Job {
        id: crate::feed::job_id_named(id),
        data: JobData::default(),
        nonce: nonce.to_owned(),
        account_id: "123456789012".to_owned(),
    }
}

fn id(name: &str) -> JobId {
    crate::feed::job_id_named(name)
}

fn client() -> Arc<str> {
    Arc::from("team-a")
}

fn subscriber(
    feed: &mut FeedState,
    credit: u32,
) -> (SubscriberId, mpsc::UnboundedReceiver<FeedEvent>) {
    let (events, received) = mpsc::unbounded_channel();
    (feed.subscribe(client(), credit, events), received)
}

fn received(events: &mut mpsc::UnboundedReceiver<FeedEvent>) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(FeedEvent::Job(job)) = events.try_recv() {
        ids.push(crate::feed::name_of_job(&job.id));
    }
    ids
}

/// A feed with one job delivered to a subscriber of its own: (feed, holder, its events, now).
fn delivered_one() -> (
    FeedState,
    SubscriberId,
    mpsc::UnboundedReceiver<FeedEvent>,
    Instant,
) {
    let now = Instant::now();
    let mut feed = FeedState::new(ACK, now);
    let (a, mut a_events) = subscriber(&mut feed, 1);
    feed.offer(vec![job("j")], now);
    feed.deliver(now);
    assert_eq!(received(&mut a_events), ["j"]);
    (feed, a, a_events, now)
}

#[test]
fn jobs_go_to_subscribers_with_credit_in_turn_and_never_beyond_it() {
    let now = Instant::now();
    let mut feed = FeedState::new(ACK, now);
    let (_a, mut a) = subscriber(&mut feed, 2);
    let (_b, mut b) = subscriber(&mut feed, 1);
    assert_eq!(feed.room(), 3);
    feed.offer((1..=5).map(|n| job(&n.to_string())).collect(), now);
    feed.deliver(now);
    assert_eq!(received(&mut a), ["1", "3"]);
    assert_eq!(received(&mut b), ["2"]);
    assert_eq!(feed.room(), 0, "two jobs wait for credit");
    assert_eq!(feed.credit(), 0);
    assert_eq!(feed.take_tally().delivered.len(), 3);
}

#[test]
fn an_unacknowledged_lease_goes_to_another_subscriber_with_the_same_nonce() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_b, mut b) = subscriber(&mut feed, 1);
    feed.expire(now + ACK - Duration::from_millis(1));
    feed.deliver(now);
    assert!(received(&mut b).is_empty(), "not before the deadline");
    feed.expire(now + ACK);
    feed.deliver(now + ACK);
    let FeedEvent::Job(again) = b.try_recv().unwrap() else {
        panic!("a job")
    };
    assert_eq!(
        (
            crate::feed::name_of_job(&again.id).as_str(),
            again.nonce.as_str()
        ),
        ("j", "nonce-j")
    );
    assert_eq!(feed.take(a, &id("j")), Err(TakeRefusal::LeaseEnded));
    assert_eq!(feed.take_tally().redelivered, 1);
}

#[test]
fn a_leaving_subscriber_hands_its_untaken_jobs_to_the_others_but_not_taken_ones() {
    let now = Instant::now();
    let mut feed = FeedState::new(ACK, now);
    let (a, mut a_events) = subscriber(&mut feed, 2);
    feed.offer(vec![job("taken"), job("untaken")], now);
    feed.deliver(now);
    assert_eq!(received(&mut a_events).len(), 2);
    feed.take(a, &id("taken")).unwrap();
    let (_b, mut b) = subscriber(&mut feed, 5);
    feed.unsubscribe(a, now);
    feed.deliver(now);
    assert_eq!(received(&mut b), ["untaken"]);
}

#[test]
fn a_held_job_is_never_delivered_elsewhere_while_its_holder_is_there() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_b, mut b) = subscriber(&mut feed, 1);
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    assert_eq!(feed.take(a, &id("j")), Err(TakeRefusal::InProgress));
    feed.acknowledged(&id("j"), generation, AckOutcome::Indeterminate, true, now);
    let much_later = now + ACK * 100;
    feed.expire(much_later);
    feed.deliver(much_later);
    assert!(received(&mut b).is_empty());
    assert_eq!(
        feed.take(a, &id("j")),
        Ok(("nonce-j".to_owned(), generation)),
        "a may try again"
    );
    feed.acknowledged(&id("j"), generation, AckOutcome::Accepted, true, much_later);
    assert_eq!(feed.take_tally().acknowledged, 1);
    assert_eq!(feed.take(a, &id("j")), Err(TakeRefusal::LeaseEnded), "gone");
}

#[test]
fn an_acknowledgement_that_never_went_upstream_keeps_the_lease() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.acknowledged(&id("j"), generation, AckOutcome::NotSent, true, now);
    assert_eq!(feed.next_deadline(), Some(now + ACK));
    assert_eq!(
        feed.take(a, &id("j")),
        Ok(("nonce-j".to_owned(), generation))
    );
}

#[test]
fn no_job_leaves_the_feed_on_a_clock_alone() {
    let now = Instant::now();
    let mut feed = FeedState::new(Duration::from_secs(60), now);
    let (a, mut a_events) = subscriber(&mut feed, 1);
    feed.offer(vec![job("leased"), job("waiting")], now);
    feed.deliver(now);
    assert_eq!(received(&mut a_events), ["leased"]);
    // Long past any re-dispatch window CodePipeline might have: still here, still deliverable.
    let hours = now + Duration::from_secs(3 * 3600);
    feed.expire(hours);
    assert!(feed.take_tally().lost.is_empty());
    feed.grant(a, 1).unwrap();
    feed.deliver(hours);
    assert_eq!(
        received(&mut a_events),
        ["leased"],
        "its lease ended, so first in line"
    );
    feed.grant(a, 1).unwrap();
    feed.deliver(hours);
    assert_eq!(received(&mut a_events), ["waiting"]);
    // An acknowledgement of a stale copy is what takes it out: the upstream refuses it.
    let (_, generation) = feed.take(a, &id("waiting")).unwrap();
    feed.acknowledged(&id("waiting"), generation, AckOutcome::Refused, true, hours);
    assert_eq!(feed.take_tally().lost, [Lost::Refused]);
}

#[test]
fn an_indeterminate_job_whose_stream_ends_is_claimed_back_by_its_clients_next_stream() {
    // The first scenario: the answer was lost, then the stream rotated.
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.acknowledged(&id("j"), generation, AckOutcome::Indeterminate, true, now);
    feed.unsubscribe(a, now);
    let (fresh, mut fresh_events) = subscriber(&mut feed, 1);
    let (_other, mut other_events) = subscriber(&mut feed, 1);
    feed.expire(now + ACK / 2);
    feed.deliver(now + ACK / 2);
    assert!(received(&mut other_events).is_empty(), "still the holder's");
    assert_eq!(
        feed.take(fresh, &id("j")),
        Ok(("nonce-j".to_owned(), generation)),
        "re-acknowledged on the new stream: the same nonce goes upstream again"
    );
    feed.acknowledged(
        &id("j"),
        generation,
        AckOutcome::Accepted,
        true,
        now + ACK / 2,
    );
    assert!(
        received(&mut fresh_events).is_empty(),
        "claimed, not delivered"
    );
    assert_eq!(feed.take_tally().acknowledged, 1);
}

#[test]
fn another_clients_stream_cannot_claim_a_job_held_away() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.unsubscribe(a, now);
    feed.acknowledged(&id("j"), generation, AckOutcome::Indeterminate, true, now);
    let (events, _other_events) = mpsc::unbounded_channel();
    let stranger = feed.subscribe(Arc::from("team-b"), 1, events);
    assert_eq!(feed.take(stranger, &id("j")), Err(TakeRefusal::LeaseEnded));
}

#[test]
fn an_unclaimed_job_held_away_goes_to_another_subscriber_one_ack_deadline_on() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.unsubscribe(a, now);
    // Its stream is gone when the answer comes: nobody heard it.
    feed.acknowledged(&id("j"), generation, AckOutcome::Indeterminate, false, now);
    let (b, mut b_events) = subscriber(&mut feed, 1);
    feed.expire(now + ACK - Duration::from_millis(1));
    feed.deliver(now + ACK);
    assert!(received(&mut b_events).is_empty());
    assert_eq!(feed.next_deadline(), Some(now + ACK));
    feed.expire(now + ACK);
    feed.deliver(now + ACK);
    assert_eq!(
        received(&mut b_events),
        ["j"],
        "the same nonce: its ack settles it"
    );
    assert_eq!(
        feed.take(b, &id("j")),
        Ok(("nonce-j".to_owned(), generation))
    );
}

#[test]
fn an_accepted_answer_that_reached_nobody_leaves_the_job_claimable() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.unsubscribe(a, now);
    feed.acknowledged(&id("j"), generation, AckOutcome::Accepted, false, now);
    assert_eq!(feed.take_tally().acknowledged, 0, "not yet anyone's");
    let (fresh, _fresh_events) = subscriber(&mut feed, 1);
    assert_eq!(
        feed.take(fresh, &id("j")),
        Ok(("nonce-j".to_owned(), generation))
    );
}

#[test]
fn a_claim_while_the_first_acknowledgement_is_on_its_way_is_asked_to_wait() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.unsubscribe(a, now);
    let (fresh, _fresh_events) = subscriber(&mut feed, 1);
    assert_eq!(feed.take(fresh, &id("j")), Err(TakeRefusal::ClaimPending));
    feed.acknowledged(&id("j"), generation, AckOutcome::Accepted, true, now);
    assert_eq!(
        feed.take(fresh, &id("j")),
        Err(TakeRefusal::LeaseEnded),
        "answered on the old stream: the job is its worker's"
    );
}

#[test]
fn an_old_acknowledgements_answer_does_not_touch_the_new_copy() {
    // The third scenario: re-dispatched with a new nonce to the same subscriber while
    // the old acknowledgement was on its way.
    let now = Instant::now();
    let mut feed = FeedState::new(ACK, now);
    let (a, mut a_events) = subscriber(&mut feed, 2);
    feed.offer(vec![job("j")], now);
    feed.deliver(now);
    received(&mut a_events);
    let (_, old) = feed.take(a, &id("j")).unwrap();
    feed.offer(vec![with_nonce("j", "fresh")], now);
    feed.deliver(now);
    assert_eq!(received(&mut a_events), ["j"]);
    feed.acknowledged(&id("j"), old, AckOutcome::Refused, true, now);
    let (nonce, new) = feed
        .take(a, &id("j"))
        .expect("the new copy's lease is untouched");
    assert_eq!(nonce, "fresh");
    assert_ne!(new, old);
    assert_eq!(feed.take_tally().lost, [Lost::Replaced]);
}

#[test]
fn a_unary_acknowledgement_of_a_streamed_job_is_refused_by_the_feed() {
    // The second scenario: A's lease ended, B holds the job, A acknowledges it unary.
    let (mut feed, a, _a_events, now) = delivered_one();
    assert!(feed.holds_for_a_stream(&id("j"), "nonce-j"), "leased");
    let (b, mut b_events) = subscriber(&mut feed, 1);
    feed.expire(now + ACK);
    assert!(
        feed.holds_for_a_stream(&id("j"), "nonce-j"),
        "waiting again"
    );
    feed.deliver(now + ACK);
    assert_eq!(received(&mut b_events), ["j"]);
    let (_, generation) = feed.take(b, &id("j")).unwrap();
    assert!(feed.holds_for_a_stream(&id("j"), "nonce-j"), "being taken");
    feed.acknowledged(&id("j"), generation, AckOutcome::Accepted, true, now + ACK);
    assert!(
        feed.holds_for_a_stream(&id("j"), "nonce-j"),
        "accepted on a stream"
    );
    assert!(
        !feed.holds_for_a_stream(&id("j"), "a-nonce-of-its-own"),
        "a poller's own copy"
    );
    assert_eq!(feed.take(a, &id("j")), Err(TakeRefusal::LeaseEnded));
}

#[test]
fn a_job_a_poller_acknowledged_with_its_own_nonce_leaves_the_feed() {
    let now = Instant::now();
    let mut feed = FeedState::new(ACK, now);
    feed.offer(vec![job("j")], now);
    assert!(!feed.holds_for_a_stream(&id("j"), "the-pollers-nonce"));
    feed.acknowledged_elsewhere(&id("j"));
    let (_a, mut a_events) = subscriber(&mut feed, 1);
    feed.deliver(now);
    assert!(received(&mut a_events).is_empty());
    assert_eq!(feed.take_tally().lost, [Lost::Replaced]);
}

#[test]
fn credit_never_exceeds_the_subscriptions_maximum() {
    let now = Instant::now();
    let mut feed = FeedState::new(ACK, now);
    let (a, _a) = subscriber(&mut feed, 3);
    assert_eq!(
        feed.grant(a, 1),
        Err(CreditRefusal::OverMaximum { held: 3, max: 3 })
    );
    assert!(feed.grant(a, u32::MAX).is_err(), "no overflow");
    feed.offer(vec![job("1")], now);
    feed.deliver(now);
    feed.grant(a, 1).unwrap();
    assert_eq!(feed.credit(), 3);
}

#[test]
fn a_job_polled_again_with_a_new_nonce_replaces_the_stale_copy() {
    let now = Instant::now();
    let mut feed = FeedState::new(ACK, now);
    let (a, mut a_events) = subscriber(&mut feed, 2);
    feed.offer(vec![job("j")], now);
    feed.deliver(now);
    received(&mut a_events);
    feed.offer(vec![job("j")], now);
    assert!(feed.take_tally().lost.is_empty(), "the same copy again");
    feed.offer(vec![with_nonce("j", "fresh")], now);
    feed.deliver(now);
    let FeedEvent::Job(job) = a_events.try_recv().unwrap() else {
        panic!("a job")
    };
    assert_eq!(job.nonce, "fresh");
    assert_eq!(feed.take(a, &id("j")).unwrap().0, "fresh");
    assert_eq!(feed.take_tally().lost, [Lost::Replaced]);
}

#[test]
fn a_deserted_feed_keeps_its_jobs_for_one_ack_deadline_then_retires() {
    // A single worker restarting gets its jobs back.
    let (mut feed, a, _a_events, now) = delivered_one();
    feed.offer(vec![job("polled-on-exit")], now);
    feed.unsubscribe(a, now);
    assert!(!feed.retirable(now + ACK / 2));
    let (_back, mut back_events) = subscriber(&mut feed, 2);
    feed.deliver(now + ACK / 2);
    assert_eq!(received(&mut back_events), ["j", "polled-on-exit"]);
    assert!(!feed.retirable(now + ACK * 10), "it has a subscriber");
}

#[test]
fn a_feed_nobody_came_back_to_retires_counting_what_it_leaves() {
    let (mut feed, a, _a_events, now) = delivered_one();
    feed.offer(vec![job("k")], now);
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.unsubscribe(a, now);
    assert!(
        !feed.retirable(now + ACK),
        "an acknowledgement is on its way"
    );
    feed.acknowledged(&id("j"), generation, AckOutcome::Indeterminate, false, now);
    feed.expire(now + ACK);
    assert!(feed.retirable(now + ACK));
    assert_eq!(
        feed.retire(),
        [id("j")],
        "reported: maybe accepted, nobody told"
    );
    assert_eq!(
        feed.take_tally().lost,
        [Lost::Abandoned, Lost::Abandoned],
        "counted"
    );
}

#[test]
fn a_departed_holders_never_sent_acknowledgement_puts_the_job_back() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.unsubscribe(a, now);
    feed.acknowledged(&id("j"), generation, AckOutcome::NotSent, false, now);
    let (_b, mut b_events) = subscriber(&mut feed, 1);
    feed.deliver(now);
    assert_eq!(received(&mut b_events), ["j"]);
}

#[test]
fn a_late_acknowledgement_of_a_job_gone_from_the_feed_is_told_to_drop_it() {
    let (mut feed, a, _a_events, now) = delivered_one();
    let (_, generation) = feed.take(a, &id("j")).unwrap();
    feed.acknowledged(&id("j"), generation, AckOutcome::Refused, true, now);
    let (fresh, _fresh_events) = subscriber(&mut feed, 1);
    assert_eq!(feed.take(fresh, &id("j")), Err(TakeRefusal::LeaseEnded));
    assert_eq!(
        feed.take(fresh, &id("never")),
        Err(TakeRefusal::NotDelivered)
    );
}
