//! Video tasks through the pages: a clip made with ffmpeg is uploaded
//! through the upload form (streamed on to the API), its page follows it to
//! `processed`, and the processed file plays from the web with `Range`
//! passed through.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::client::{Visitor, value_after};
use crate::stack::Stack;

async fn upload(
    visitor: &mut Visitor,
    action: &str,
    bytes: Vec<u8>,
    name: &str,
) -> crate::client::Page {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("video/mp4")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let request = visitor.request(Method::POST, action).multipart(form);
    visitor.send(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_is_uploaded_processed_and_played_through_the_pages() {
    let dir = std::env::temp_dir().join(format!("zocalo-web-clip-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clip.mp4");
    let Some(bytes) = crate::stack::clip(&path).then(|| std::fs::read(&path).unwrap()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffmpeg is needed under CI"
        );
        eprintln!("ffmpeg is not installed: the video pages test did not run");
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);
    let stack = Stack::start();
    let mut vera = Visitor::new(&stack.base);
    vera.sign_up("Vera", "vera@example.com", "correct horse 42")
        .await;
    let page = vera.get("/videos").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_contains(r#"enctype="multipart/form-data""#);
    let token = value_after(&page.html, r#"action="/videos?csrf="#).unwrap();
    let action = format!("/videos?csrf={token}");

    // Without the form's token nothing is uploaded.
    let refused = upload(&mut vera, "/videos", bytes.clone(), "clip.mp4").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Not a video: the API's refusal is shown on the form.
    let text = upload(&mut vera, &action, b"not a video".to_vec(), "notes.mp4").await;
    assert_eq!(text.status, StatusCode::UNPROCESSABLE_ENTITY);
    text.assert_contains(r#"role="alert""#);

    let done = upload(&mut vera, &action, bytes, "clip.mp4").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    let task = done.location.unwrap();
    assert!(task.starts_with("/videos/"), "{task}");

    // The status the page's script polls, until processed (at most 60 s).
    let mut last = String::new();
    for _ in 0..600 {
        let status = vera.get(&format!("{task}/status")).await;
        assert_eq!(status.status, StatusCode::OK);
        let state: serde_json::Value = serde_json::from_str(&status.html).unwrap();
        last = state["status"].as_str().unwrap().to_owned();
        if state["final"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, "processed");
    let page = vera.get(&task).await;
    page.assert_contains(&format!(
        r#"<video controls preload="metadata" src="{task}/processed""#
    ));
    let list = vera.get("/videos").await;
    list.assert_contains("clip.mp4");

    // A player's range request is passed through.
    let request = vera
        .request(Method::GET, &format!("{task}/processed"))
        .header("range", "bytes=0-99");
    let part = vera.send(request).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    let original = vera.get(&format!("{task}/original")).await;
    assert_eq!(original.status, StatusCode::OK);
    assert_eq!(original.content_type, "video/mp4");

    // Somebody else's video is not found; without signing in, sign in.
    let mut other = Visitor::new(&stack.base);
    other
        .sign_up("Otto", "otto@example.com", "correct horse 42")
        .await;
    assert_eq!(other.get(&task).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        other.get(&format!("{task}/processed")).await.status,
        StatusCode::NOT_FOUND
    );
    let anonymous = Visitor::new(&stack.base).get(&task).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
}
