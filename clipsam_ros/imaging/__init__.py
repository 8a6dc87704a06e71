"""Images in and out: sensor_msgs codec, image files, overlay drawing."""
