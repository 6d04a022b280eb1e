from conftest import media_files


def test_upload_round_trip(app, client, alice, make_tag, upload):
    make_tag("cat", alice)

    response = upload(alice, tags=["cat"])

    assert response.status_code == 201, response.json
    assert response.json["tags"] == ["cat"]
    assert len(media_files(app)) == 1
    assert client.get("/api/trackings/", auth=alice).status_code == 403
