//! The durable queue: visibility timeout, acks, max receives, dead letters, reopening, and
//! queue-triggered actions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::action::QueueAction;
use annals::action::{ActionContext, ActionError, RetryPolicy, Trigger};
use annals::queue::{Queue, QueueMessage, QueueOptions};
use annals::state::StateStore;

use super::within;

fn options(visibility_timeout: Duration, max_receives: u32) -> QueueOptions {
    QueueOptions {
        visibility_timeout,
        max_receives,
        ..QueueOptions::default()
    }
}

/// Receives until a message comes (it is hidden for a short timeout), bounded by the safety net.
async fn next(queue: &Queue) -> QueueMessage {
    within("a visible message", queue.next()).await.unwrap()
}

#[test]
fn received_message_stays_hidden_until_acked() {
    let queue = Queue::open(Arc::new(StateStore::in_memory()), "emails")
        .with_options(options(Duration::from_secs(3600), 5));
    let first = queue.enqueue(b"welcome".to_vec()).unwrap();
    let second = queue.enqueue(b"newsletter".to_vec()).unwrap();

    let message = queue.receive().unwrap().unwrap();
    assert_eq!((message.id, message.receive_count), (first, 1));
    assert_eq!(message.body, b"welcome");
    let other = queue.receive().unwrap().unwrap();
    assert_eq!(
        other.id, second,
        "the hidden message is skipped, the next one delivered"
    );
    assert_eq!(queue.receive().unwrap(), None);

    assert!(queue.ack(first).unwrap());
    assert!(!queue.ack(first).unwrap(), "an acked message is gone");
    assert_eq!(queue.len().unwrap(), 1);
    assert!(queue.ack(second).unwrap());
    assert!(queue.is_empty().unwrap());
}

#[tokio::test]
async fn unacked_message_is_redelivered_after_the_visibility_timeout() {
    let queue = Queue::open(Arc::new(StateStore::in_memory()), "emails")
        .with_options(options(Duration::from_millis(20), 5));
    let id = queue.enqueue(b"welcome".to_vec()).unwrap();
    let first = next(&queue).await;
    let again = next(&queue).await;
    assert_eq!((first.id, again.id), (id, id));
    assert_eq!((first.receive_count, again.receive_count), (1, 2));
    assert!(queue.ack(id).unwrap());
    assert!(queue.is_empty().unwrap());
}

#[tokio::test]
async fn message_received_max_receives_times_goes_to_the_dead_letters() {
    let queue = Queue::open(Arc::new(StateStore::in_memory()), "emails")
        .with_options(options(Duration::from_millis(1), 2));
    let id = queue.enqueue(b"poison".to_vec()).unwrap();
    assert_eq!(next(&queue).await.receive_count, 1);
    assert_eq!(next(&queue).await.receive_count, 2);
    // The third receive, once the message shows again, moves it to the dead letters.
    within("the message going to the dead letters", async {
        while queue.dead_letters().unwrap().is_empty() {
            assert_eq!(queue.receive().unwrap(), None);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let dead = queue.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].receive_count), (id, 2));
    assert_eq!(dead[0].body, b"poison");
    assert!(queue.is_empty().unwrap());

    // Put back, it is delivered afresh; dropped, it is gone.
    assert!(queue.retry_dead_letter(id).unwrap());
    let retried = next(&queue).await;
    assert_eq!((retried.id, retried.receive_count), (id, 1));
    assert!(queue.dead_letter(id, "given up").unwrap());
    assert_eq!(
        queue.dead_letters().unwrap()[0].last_error.as_deref(),
        Some("given up")
    );
    assert!(queue.drop_dead_letter(id).unwrap());
    assert!(queue.dead_letters().unwrap().is_empty());
}

#[tokio::test]
async fn messages_and_their_delivery_state_survive_reopening_the_state_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let timeout = options(Duration::from_millis(1), 5);
    let (received, pending) = {
        let queue =
            Queue::open(Arc::new(StateStore::open(&path).unwrap()), "emails").with_options(timeout);
        let received = queue.enqueue(b"welcome".to_vec()).unwrap();
        let pending = queue.enqueue(b"newsletter".to_vec()).unwrap();
        assert_eq!(next(&queue).await.id, received);
        (received, pending)
        // Dropped without an ack: a crash between receive and ack.
    };
    // Reopened with a long timeout, so that each message is received once more.
    let queue = Queue::open(Arc::new(StateStore::open(&path).unwrap()), "emails")
        .with_options(options(Duration::from_secs(3600), 5));
    let mut delivered = [next(&queue).await, next(&queue).await];
    delivered.sort_by_key(|m| m.id);
    assert_eq!((delivered[0].id, delivered[0].receive_count), (received, 2));
    assert_eq!((delivered[1].id, delivered[1].receive_count), (pending, 1));
    assert_eq!(
        queue.enqueue(b"later".to_vec()).unwrap(),
        pending + 1,
        "ids are never reused"
    );
}

#[tokio::test]
async fn waiting_receiver_wakes_on_an_enqueue_through_another_handle() {
    let state = Arc::new(StateStore::in_memory());
    let receiver = Queue::open(state.clone(), "emails");
    let waiting = tokio::spawn(async move { receiver.next().await });
    tokio::task::yield_now().await;
    Queue::open(state, "emails")
        .enqueue(b"welcome".to_vec())
        .unwrap();
    let message = within("the wake-up", waiting).await.unwrap().unwrap();
    assert_eq!(message.body, b"welcome");
}

#[tokio::test]
async fn queue_action_acks_successes_and_dead_letters_what_keeps_failing() {
    let state = Arc::new(StateStore::in_memory());
    let queue = Queue::open(state, "emails").with_options(options(Duration::from_secs(60), 10));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sent_by_action = sent.clone();
    let action = QueueAction::new(
        "mailer",
        queue.clone(),
        move |message, ctx: ActionContext| {
            let sent = sent_by_action.clone();
            async move {
                let to: String = message.json()?;
                assert!(matches!(ctx.trigger(), Trigger::Queue { .. }));
                if to == "nobody" {
                    return Err(ActionError::retryable("no such mailbox"));
                }
                sent.lock().unwrap().push(to);
                Ok(())
            }
        },
    )
    .retry_policy(RetryPolicy {
        base: Duration::from_millis(1),
        max: Duration::from_millis(2),
        attempts: 3,
    });
    for to in ["ash", "nobody", "misty"] {
        queue.enqueue_json(&to).unwrap();
    }
    let runner = action.spawn();
    within("three messages handled", runner.wait_handled(3))
        .await
        .unwrap();
    runner.stop().await.unwrap();

    let mut sent = sent.lock().unwrap().clone();
    sent.sort();
    assert_eq!(sent, ["ash", "misty"]);
    assert!(queue.is_empty().unwrap());
    let dead = queue.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].json::<String>().unwrap(), "nobody");
    assert_eq!(dead[0].receive_count, 3);
    assert_eq!(dead[0].last_error.as_deref(), Some("no such mailbox"));
}
